"""Masivo's consent object, as GET /customers/{id}/consent and the customer object show it.

The loyalty processor keeps the purposes as a flat map (`consent`, what rules, audiences and
leaderboards read) and the rest of the record (`consent_record`: consent_string, version,
consent_timestamp, vendors) beside it in the profile; this joins them. With nothing stored,
Masivo answers every purpose true, which is also how the engine treats such a customer.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from ingest.models import PURPOSES


def consent_object(customer_id: str, purposes: Any, record: Any) -> dict[str, Any]:
    """`{consent_string, version, consent_timestamp, customer_id, purposes{...}, vendors{}}`:
    every purpose we know (Masivo's and ours, e.g. `leaderboards`) true unless stored false."""
    stored = purposes if isinstance(purposes, dict) else {}
    rec = record if isinstance(record, dict) else {}
    shown = {**dict.fromkeys(PURPOSES, True), **{k: v for k, v in stored.items() if isinstance(v, bool)}}
    return {
        "consent_string": rec.get("consent_string"),
        "version": rec.get("version"),
        "consent_timestamp": rec.get("consent_timestamp"),
        "customer_id": customer_id,
        "purposes": shown,
        "vendors": rec.get("vendors") or {},
    }


def command_payload(body: Any) -> dict[str, Any]:
    """The CONSENT command's payload from a ConsentIn: only what was given (the processor
    keeps the rest); the timestamp as ISO 8601 text."""
    payload: dict[str, Any] = {}
    if body.purposes is not None:
        payload["purposes"] = body.purposes.model_dump(exclude_none=True)
    if body.vendors is not None:
        payload["vendors"] = body.vendors
    for name in ("consent_string", "version"):
        if getattr(body, name) is not None:
            payload[name] = getattr(body, name)
    if body.consent_timestamp is not None:  # without a zone: UTC, as issued_at
        at = body.consent_timestamp
        payload["consent_timestamp"] = (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()
    return payload
