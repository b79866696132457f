"""POINTS_EXPIRING on real Kafka with the manual clock: the notice reaches the `notifications`
topic (committed) once, `points_expiring_days` before the points expire, and not again after the
processor restarts on an empty state dir (its state and timers restored from the changelogs),
gets a new event for the customer and then lets the points expire."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from plumbing.config_table import publish_program
from plumbing.kafka_util import committed_reader
from processors.runtime.clock import ManualClock
from processors.runtime.runner import Runner
from schemas.codec import decode
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import NOTIFICATIONS
from tests.integration.test_loyalty_kafka import Results, runner, send, where

pytestmark = pytest.mark.integration
__all__ = ["results"]  # the fixture, imported for this module's tests
DAY = 86_400_000
PROGRAM = Program.model_validate(
    {
        "rewards": [{"id": "POINTS", "name": "Points", "expires_after_days": 30}],
        "campaigns": [{"id": "base", "condition": "properties.amount > 0", "formula": "properties.amount"}],
        "notices": {"points_expiring_days": 7},
    }
)


class Notes:
    """Reads `notifications` (committed only) and waits for conditions on it."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = committed_reader(settings, NOTIFICATIONS)
        self.records: list[dict[str, Any]] = []
        self.runner: Runner | None = None

    def wait_for(self, check: Callable[[list[dict]], Any], timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := check(self.records)):
            assert time.monotonic() < deadline, f"timed out; notifications: {self.records}"
            assert self.runner is None or self.runner.error is None, self.runner.error
            for msg in self.consumer.consume(500, 0.2):
                if not msg.error():
                    note = decode(msg.value(), "Notification")
                    self.records.append({**note, "data": orjson.loads(note["data"])})
        return found


@pytest.fixture
def results(settings: Settings) -> Iterator[Results]:
    reader = Results(settings)
    yield reader
    reader.consumer.close()


@pytest.fixture
def notes(settings: Settings) -> Iterator[Notes]:
    reader = Notes(settings)
    yield reader
    reader.consumer.close()


def of(customer: str, event: str) -> Callable[[list[dict]], list[dict]]:
    return lambda records: [r for r in records if r["customer_id"] == customer and r["event"] == event]


def test_the_expiry_notice_reaches_notifications_once(
    settings: Settings, results: Results, notes: Notes, tmp_path: Path
) -> None:
    publish_program(settings, PROGRAM)
    clock = ManualClock()
    start = clock.now_ms()
    cid = f"exp-{uuid.uuid4().hex[:8]}"
    run = results.runner = notes.runner = runner(settings, tmp_path / "one", clock)
    try:
        send(settings, cid, properties={"amount": 100})
        (earned,) = results.wait_for(where(customer_id=cid, status="RESOLVED"))
        (line,) = earned["detail"]["accumulations"]
        assert line["expiration_date"] == start + 30 * DAY
        clock.advance(23 * DAY - 1000)  # a second before the notice is due: nothing yet
        send(settings, cid, properties={"amount": 1})  # a marker behind whatever came due
        notes.wait_for(lambda rs: len(of(cid, "CUSTOMER_ACCUMULATION")(rs)) == 2)
        assert of(cid, "POINTS_EXPIRING")(notes.records) == []
        clock.advance(1000)
        (notice,) = notes.wait_for(of(cid, "POINTS_EXPIRING"))
        assert notice["data"]["amount"] == 100 and notice["data"]["days_left"] == 7
        assert notice["data"]["expiration_date"] == line["expiration_date"]
    finally:
        run.stop()
    run = results.runner = notes.runner = runner(settings, tmp_path / "two", clock)  # empty disk
    try:
        send(settings, cid, properties={"amount": 5})  # re-arms the notices: the day was sent
        notes.wait_for(lambda rs: len(of(cid, "CUSTOMER_ACCUMULATION")(rs)) == 3)
        clock.advance(8 * DAY)  # past the expiry of the first 100 points
        (expired,) = results.wait_for(where(customer_id=cid, type="POINTS_EXPIRY"))
        assert expired["detail"]["expirations"][0]["amount"] == 100
        send(settings, cid, properties={"amount": 1})  # a marker behind the expiry
        notes.wait_for(lambda rs: len(of(cid, "CUSTOMER_ACCUMULATION")(rs)) == 4)
        assert len(of(cid, "POINTS_EXPIRING")(notes.records)) == 1
        assert run.error is None
    finally:
        run.stop()
