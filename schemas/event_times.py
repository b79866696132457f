"""An event's lifecycle times, as Masivo names them (processing_at, resolved_at, cancelled_at,
expired_at, reversed_at): shared by the loyalty processor (which keeps them), the sink (which
stores them as columns of `events`) and ingest (which shows them).

A first result carries no `times`: they follow from its status and `processed_at` (`first`),
which keeps the hot path's results small. A later transition (fulfil, cancel, expiry,
reversal) carries every time so far in its detail (`times`, epoch ms), so the latest result
alone shows the whole lifecycle: an event RESOLVED and then REVERSED has both times.
"""

from __future__ import annotations

from typing import Any

TIME_FIELDS = ("processing_at", "resolved_at", "cancelled_at", "expired_at", "reversed_at")
# the time a status sets; Masivo's resolved_at is "resolved, either succeeded or failed"
STATUS_TIME = {
    "RESOLVED": "resolved_at",
    "FAILED": "resolved_at",
    "REJECTED": "resolved_at",
    "CANCELLED": "cancelled_at",
    "EXPIRED": "expired_at",
    "REVERSED": "reversed_at",
}


# statuses only a later transition sets: a result with one of them and no `times` (written
# before times were kept) says when that happened, not when the event was first processed
LATER = frozenset({"CANCELLED", "EXPIRED", "REVERSED"})


def first(status: str | None, at: Any) -> dict[str, Any]:
    """The times of a first result: processed (processing_at) and, unless it is an open
    reservation (PENDING), its status's time, both `at`."""
    if at is None:
        return {}
    times = {} if status in LATER else {"processing_at": at}
    if status in STATUS_TIME:
        times[STATUS_TIME[status]] = at
    return times


def after(record: dict[str, Any], status: str, at: int) -> dict[str, int]:
    """The times of an event (the processor's record of it) moving to `status` at `at`:
    every earlier transition's time is kept."""
    first_result = record["result"]
    prior = record.get("times") or first(first_result.get("status"), first_result.get("processed_at"))
    return {**prior, STATUS_TIME[status]: at}


def of(status: str | None, processed_at: Any, times: Any) -> dict[str, Any]:
    """Every field of TIME_FIELDS (None when unset) from a result's `times`, or from its status
    and processed_at when it has none (a first result, or one written before times were kept)."""
    known = times if isinstance(times, dict) and times else first(status, processed_at)
    return {name: known.get(name) for name in TIME_FIELDS}
