"""The events table keeps every lifecycle time of an event (issue 16): the columns come from a
result's `times`, or from its status when it has none, and a batch holding several results of
one event keeps the latest one with every time either knew."""

from __future__ import annotations

import orjson

from schemas import event_times
from schemas import topics as t
from sinks import samples
from sinks.batch import Batch
from sinks.mapping import Source, rows_for, ts

TIMES = ("processing_at", "resolved_at", "cancelled_at", "expired_at", "reversed_at")


def _event_row(res: dict) -> dict:
    return dict(rows_for(res, Source(t.LOYALTY_RESULTS)))["events_from_result"]


def _with_times(res: dict, **times: int) -> dict:
    detail = orjson.loads(res["detail"])
    return {**res, "detail": orjson.dumps({**detail, "times": times}).decode()}


def test_a_first_result_sets_processing_and_its_status_time() -> None:
    ev = samples.event("c1", 1)
    row = _event_row(samples.result(ev, 1.0, 1.0, processed_at=100))
    assert [row[c] for c in TIMES] == [ts(100), ts(100), None, None, None]
    pending = _event_row(samples.result(ev, 0.0, 1.0, status="PENDING", processed_at=100))
    assert pending["processing_at"] == ts(100) and pending["resolved_at"] is None


def test_a_reversal_keeps_when_the_event_was_resolved() -> None:
    ev = samples.event("c1", 1)
    res = samples.result(ev, 1.0, 1.0, status="REVERSED", processed_at=300)
    row = _event_row(_with_times(res, processing_at=100, resolved_at=200, reversed_at=300))
    assert [row[c] for c in TIMES] == [ts(100), ts(200), None, None, ts(300)]


def test_a_batch_keeps_the_latest_result_and_every_time() -> None:
    """The second result was written by a processor that did not keep times yet: the batch
    still has the resolved_at of the first."""
    ev = samples.event("c1", 1)
    batch = Batch()
    for status, at in (("RESOLVED", 100), ("REVERSED", 300)):
        res = samples.result(ev, 1.0, 1.0, status=status, processed_at=at)
        batch.add(res, Source(t.LOYALTY_RESULTS, 0, at), "p.loyalty.results")
    (row,) = batch.rows["events_from_result"].values()
    assert row["status"] == "REVERSED"
    assert [row[c] for c in TIMES] == [ts(100), ts(100), None, None, ts(300)]


def test_a_first_result_of_every_status_gets_the_times_event_times_defines() -> None:
    """The sink looks a first result's time columns up per status (a cache): for every
    status, also an unknown one, and for odd processed_at values, they are event_times.of's."""
    ev = samples.event("c1", 1)
    statuses = [*event_times.STATUS_TIME, "PENDING", "PROCESSING", "SOMETHING_NEW"]
    for status in statuses:
        for at in (100, 2.5e12, "2026-12-01T10:00:00Z", "not a time", True, None):
            row = _event_row(samples.result(ev, 1.0, 1.0, status=status, processed_at=at))
            expected = {c: ts(v) for c, v in event_times.of(status, at, None).items()}
            assert {c: row[c] for c in TIMES} == expected, (status, at)
