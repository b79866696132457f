"""Bounded state on real Kafka (issue 19): past `retention.events_days` the sweep deletes the
event's record, and the `events` store's changelog carries a tombstone (value None) for its
key, so compaction frees it and a restore does not bring it back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from plumbing.config_table import publish_program
from plumbing.kafka_util import committed_reader
from processors.runtime.clock import ManualClock
from schemas.program import Program
from schemas.settings import Settings
from tests.integration.test_loyalty_kafka import HOUR, Results, results, runner, send, where

pytestmark = pytest.mark.integration
__all__ = ["results"]  # the fixture, used by name
DAY = 24 * HOUR
PROGRAM = Program.model_validate(
    {
        "campaigns": [{"id": "base", "condition": "properties.amount > 0", "formula": "properties.amount"}],
        "retention": {"events_days": 10},
    }
)


def changelog_values(settings: Settings, key: bytes, want: int, timeout: float = 60) -> list:
    """The values (None: a tombstone) of `key` in the events changelog, once `want` are there."""
    reader = committed_reader(settings, "loyalty-events-changelog")
    found: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < want:
            assert time.monotonic() < deadline, f"changelog of {key!r}: {found}"
            for msg in reader.consume(500, 0.2):
                if not msg.error() and msg.key() == key:
                    found.append(msg.value())
    finally:
        reader.close()
    return found


def test_an_expired_event_record_leaves_a_tombstone_in_the_changelog(
    settings: Settings, results: Results, tmp_path: Path
) -> None:
    publish_program(settings, PROGRAM)
    clock = ManualClock()
    run = results.runner = runner(settings, tmp_path, clock)
    try:
        order = send(settings, "ann", properties={"amount": 5})
        results.wait_for(where(event_id=order, status="RESOLVED"))
        clock.advance(10 * DAY + HOUR)  # past the window and the hourly sweep
        written, deleted = changelog_values(settings, order.encode(), want=2)
        assert written is not None and deleted is None
        late = send(settings, "ann", kind="REVERSE", type="COMMAND", target_event_id=order)
        (refused,) = results.wait_for(where(customer_id="ann", kind="REVERSE"))
        assert refused["status"] == "FAILED" and "10-day retention window" in refused["reason"]
        assert late and run.error is None
    finally:
        run.stop()
