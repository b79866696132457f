"""Retention of the `events` store: records of events (idempotency, fulfil, cancel, reversal)
are kept `retention.events_days` after they were first seen, then deleted.

Without it the store, and its changelog, grew by one record per event forever. Each new record
gets an index key `~since/<ms>/<event id>` in the same store (one small put per event, sorted
by time); an hourly timer per partition deletes what is past the window, oldest first, with
store deletes, so the changelog carries tombstones and compaction frees the keys. A record
past the window but not yet swept already counts as gone (`expired`).

The index is a local index of the store (processors/runtime/local_index.py): never logged, and
derived again from each event record a restore writes (`derived`), so an event costs a cold
start one changelog record, not two. A record's bytes begin with its `since` (records.dumps),
so a restore reads it off the value's start instead of parsing the record.
A tombstone cannot say which index key its record had, so a restore may leave a stale one; and
changelogs written before the index was local still carry index records. The sweep already
treats both as stale: an index key whose record is gone, or has another `since`, is dropped.
"""

from __future__ import annotations

import re
from itertools import islice
from typing import Any

from processors.loyalty import records
from processors.loyalty.records import since
from processors.runtime.api import Context, Store
from schemas.program import Program

DAY_MS = 86_400_000
SWEEP_MS = 3_600_000  # a sweep per partition every hour, on the hour
AGAIN_MS = 1_000  # more was due than one sweep deletes: the next one a second later
SWEEP_LIMIT = 5_000  # records deleted per sweep: keeps one transaction small
SWEEP = "retention"  # the timer's payload type (and id: one per partition)
SINCE = "~since/"  # index prefix ('~' sorts after the ids ingest assigns)


def window_ms(program: Program) -> int:
    return program.retention.events_days * DAY_MS


def expired(record: dict[str, Any], now: int, program: Program) -> bool:
    return since(record) <= now - window_ms(program)


def too_old(event_id: str, program: Program) -> str:
    return f"event {event_id} is older than the {program.retention.events_days}-day retention window"


def index_key(at: int, event_id: str) -> str:
    return f"{SINCE}{at:015d}/{event_id}"


_SINCE = SINCE.encode()
_SINCE_FIRST = re.compile(rb'\{"since":(\d+)[,}]')


def is_local(key: bytes) -> bool:
    """The time index is local (local_index.py): never in the changelog."""
    return key.startswith(_SINCE)


def derived(key: bytes, value: bytes | None) -> tuple[bytes, bytes | None] | None:
    """The index key a restored event record implies: (`~since/<ms>/<id>`, 1) for a record
    written, None for a tombstone or an index record an older changelog logged."""
    if value is None or key.startswith(_SINCE):
        return None
    return b"%s%015d/%s" % (_SINCE, _since_of(value), key), b"1"  # index_key's, in bytes


def _since_of(value: bytes) -> int:
    """A stored record's `since`, read off its value's start (a restore reads one per event);
    a record written before `since` came first is parsed."""
    if (found := _SINCE_FIRST.match(value)) is not None:
        return int(found[1])
    return since(records.loads(value))


def arm(ctx: Context) -> None:
    """(Re)schedule this partition's sweep for the next hour: the same time however often it
    is called, so restarts do not postpone it."""
    at = (ctx.now() // SWEEP_MS + 1) * SWEEP_MS
    ctx.schedule(at, SWEEP, {"type": SWEEP}, SWEEP)


def sweep(ctx: Context, events: Store) -> int:
    """Delete the records past the window (at most SWEEP_LIMIT) and schedule the next sweep;
    returns how many index keys were handled. An open reservation (PENDING) is kept, its
    window restarted: the records of fulfil and cancel must outlive the hold."""
    now = ctx.now()
    cutoff = now - window_ms(ctx.config)
    due = list(islice(events.range(SINCE, f"{SINCE}{cutoff + 1:015d}"), SWEEP_LIMIT))
    for key, _ in due:
        at, event_id = key[len(SINCE) :].split("/", 1)
        events.delete(key)
        record = events.get(event_id)
        if record is None or since(record) != int(at):
            continue  # gone already, or re-created since (a repeat after the window)
        if record.get("status") == "PENDING":
            events.put(event_id, {**record, "since": now})
            events.put(index_key(now, event_id), 1)
        else:
            events.delete(event_id)
    at = now + AGAIN_MS if len(due) == SWEEP_LIMIT else (now // SWEEP_MS + 1) * SWEEP_MS
    ctx.schedule(at, SWEEP, {"type": SWEEP}, SWEEP)
    return len(due)
