"""An anonymous customer identifies as a known id (`PATCH /customers/{id}/identify/anonymous`).

Two partitions, no cross-partition read: the IDENTIFY command (key = the anonymous id) seals
the anonymous state on its partition and emits one MERGE command (key = the known id) carrying
the open wallet lines, open reservations with their event records, lifetime, metrics, campaign
counts, badges, achievement progress and profile data; the known id's partition applies it once
(by source id, kept for ever in `merged_from`, and by the command's id) and sends
CUSTOMER_ANONYMOUS_TO_REGISTERED. Seal and MERGE commit in one transaction, so a crash between
them cannot lose or double the move.

A sealed state keeps `merged_into`: every later input to the anonymous id is re-keyed to the
known id (`forward`), and its timers do nothing, so an event racing with the merge is credited
to the known id exactly once (the known partition de-duplicates by event id). An input the
anonymous partition already recorded is still answered there as a duplicate.

This module holds what both halves and the processor share; the halves are inputs of their
own: the seal in commands.py (`identify`), the MERGE in merges.py.
"""

from __future__ import annotations

from typing import Any

import orjson

from processors.loyalty import wallet
from processors.loyalty.core import Lookup
from processors.loyalty.envelope import as_json
from processors.loyalty.records import applied

MERGED_INTO = "merged_into"  # state of a sealed anonymous customer: the id it moved to
MERGED_FROM = "merged_from"  # state of a known customer: anonymous id -> merge command id
CARRIED = "merged_record"  # payload key of a forwarded command: its target's record
# what a sealed state keeps (the rest moved): identity, sequence, registration data, and its
# lines (all closed by the seal; the ledger view writes their tombstones to the `ledger` store)
KEPT = ("customer_id", "sequence", "lines_v", "customer", "registered_at", "tags", "buckets")
# what the MERGE carries of the anonymous state besides its lines and reservations
MOVED = (
    "lifetime",
    "metrics",
    "campaigns",
    "badges",
    "achievements",
    "consent",
    "consent_record",
    "customer",
    "tags",
    "tier",
    "registered_at",
)


def merged_into(state: dict[str, Any] | None) -> str | None:
    return (state or {}).get(MERGED_INTO)


def stays(event: dict[str, Any]) -> bool:
    """A sealed anonymous id answers IDENTIFY itself (a repeat is idempotent); all else moves."""
    return event.get("kind") == "IDENTIFY"


def forward(event: dict[str, Any], into: str, lookup: Lookup) -> dict[str, Any]:
    """The input re-keyed to the known id, same id (so it is applied there once). A command on
    an event applied here before the merge carries that event's record along (a reversal)."""
    out = {**event, "customer_id": into}
    target = event.get("target_event_id")
    record = lookup(target) if target else None
    if record is not None:
        out["payload"] = command_payload(event, {CARRIED: rehomed(record, into)})
    return out


def rehomed(record: dict[str, Any], into: str) -> dict[str, Any]:
    """An event record as the known id's: its event names that customer (fulfil, cancel and
    reverse check whose event it is)."""
    event = applied(record)["event"]
    return {**record, "event": {**event, "customer_id": into}}


def command_payload(event: dict[str, Any], extra: dict[str, Any]) -> str:
    return orjson.dumps({**as_json(event.get("payload")), **extra}).decode()


def lookup_with(lookup: Lookup, event: dict[str, Any]) -> Lookup:
    """`lookup`, falling back to the target record a forwarded command carries."""
    carried = as_json(event.get("payload")).get(CARRIED) if event.get("target_event_id") else None
    if carried is None:
        return lookup
    target = event["target_event_id"]

    def read(event_id: str) -> dict[str, Any] | None:
        found = lookup(event_id)
        return carried if found is None and event_id == target else found

    return read


def transfer(kind: str, bucket: dict[str, Any], source_id: str, index: int, now: int, sign: int) -> dict:
    """A ledger line of the move (MERGE_OUT on the anonymous id, MERGE_IN on the known one),
    naming the line it moves so both ledgers still explain their balance."""
    line = wallet.line(
        kind,
        sign * bucket["remaining"],
        bucket["reward_id"],
        source_id,
        now,
        index,
        bucket.get("campaign_id"),
        bucket.get("rule"),
        bucket.get("expiration_date"),
    )
    line["source_line_id"] = bucket["id"]
    line["source_event_id"] = bucket.get("event_id")
    return line
