"""Fixtures of the integration tests: a fresh, migrated sink database per test module."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from schemas.settings import Settings
from sinks.sink import Sink, SinkOptions
from tests.support.pg import scratch_database


@pytest.fixture(scope="module")
def sink_db(database_url: str) -> Iterator[str]:
    """A fresh database on the server of DATABASE_URL, migrated to head."""
    with scratch_database(database_url, "sink") as url:
        yield url


@pytest.fixture
def cfg(settings: Settings, sink_db: str) -> Settings:
    """This test's settings, pointed at the module's sink database."""
    return dataclasses.replace(settings, database_url=sink_db)


@pytest.fixture
def sink(cfg: Settings) -> Iterator[Sink]:
    """A running sink into the module's database, with small batches."""
    s = Sink(cfg, SinkOptions(batch_size=500, linger_ms=50)).start()
    yield s
    s.stop()


@pytest.fixture
def sink_settings(settings: Settings, database_url: str) -> Iterator[Settings]:
    """This test's settings on a fresh migrated database of its own, with a sink writing into it."""
    with scratch_database(database_url, "sink_test") as url:
        cfg = dataclasses.replace(settings, database_url=url)
        sink = Sink(cfg, SinkOptions(batch_size=500, linger_ms=50)).start()
        try:
            yield cfg
        finally:
            sink.stop()
