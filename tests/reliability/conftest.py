"""Every processor process a reliability test started is gone when the test ends, failed or
not: a leftover holds its port and its consumer group and breaks the tests after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.harness import ProcessorProcess


@pytest.fixture(autouse=True)
def no_leftover_processors() -> Iterator[None]:
    yield
    ProcessorProcess.kill_leftovers()
