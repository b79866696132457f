"""Event envelopes the engine reads and writes: ids, internal commands, JSON fields."""

from __future__ import annotations

from typing import Any

import orjson

from schemas.ids import name_uuid


def uid(*parts: Any) -> str:
    return name_uuid(":".join(str(p) for p in parts))


DRY_RUN = "DRY_RUN"  # ingest's "what would this event do" (processors/loyalty/dry_run.py)
# kinds only the loyalty processor itself produces (re-keyed commands and their replies): a
# replay of recorded events (loyalty backtest) skips them, the engine under replay makes its own
INTERNAL_KINDS = frozenset({
    "REFERRAL_CODE", "REFERRAL_CLAIM", "REFERRAL_REWARD",
    "COUPON_CLAIM", "COUPON_GRANTED", "COUPON_REJECTED",
    "BUDGET_RESERVE", "BUDGET_DECISION",
    "MERGE",
    DRY_RUN,  # ingest's, but no behaviour either: it changes nothing
})  # fmt: skip


def command(kind: str, customer_id: str, type_: str, now: int, **fields: Any) -> dict[str, Any]:
    """An internal Event record (a re-keyed command or a scheduled event)."""
    payload = fields.pop("payload", {})
    return {
        "id": fields.pop("id", None) or uid(kind, customer_id, type_, now),
        "kind": kind,
        "customer_id": customer_id,
        "type": type_,
        "issued_at": now,
        "received_at": now,
        "payload": orjson.dumps(payload).decode(),
        **fields,
    }


def public_event(event: dict[str, Any]) -> dict[str, Any]:
    """The event as JSON for results and webhooks: its JSON-string fields parsed."""
    out = dict(event)
    for name in ("properties", "metadata", "payload"):
        if isinstance(out.get(name), str):
            out[name] = as_json(out[name])
    return out


def as_json(text: str | dict | None) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    return orjson.loads(text) if text else {}
