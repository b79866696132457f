"""Turn request bodies into `Event` records (schemas/avro/event.avsc).

Thin by design: the checks, the id and the route are schemas/intake.py, the one code path
HTTP ingest shares with the events.inbound router and the producer helper; this adapter only
turns their `Invalid` into a 422. Rules, dedup and state live in the loyalty processor.
"""

from __future__ import annotations

from typing import Any

from ingest.config import IngestConfig
from ingest.errors import ApiError
from ingest.programs import TypeRegistry
from schemas.intake import (  # noqa: F401 - event_id, to_ms, topic_for: ingest's names for them
    SCREENED,
    EventLimits,
    Invalid,
    build_event,
    dump_json,
    encode_event,
    event_id,
    to_ms,
    topic_for,
)


def api_error(exc: Invalid) -> ApiError:
    return ApiError(422, exc.message, code=exc.code, fields=exc.fields)


class EventBuilder:
    """Validates events against the current program and builds Avro-ready records."""

    def __init__(self, config: IngestConfig, types: TypeRegistry) -> None:
        self.config = config
        self.types = types
        self.limits = EventLimits(config.max_event_age_s, config.clock_skew_s)

    def event(self, value: Any, now_ms: int, exact: Any) -> dict[str, Any]:
        """schemas.intake.build_event on the current program, as ApiError(422) on failure."""
        try:
            return build_event(value, self.types.current(), now_ms, self.limits, exact=exact)
        except Invalid as exc:
            raise api_error(exc) from None

    def encode(self, record: dict[str, Any]) -> bytes:
        """Avro single-object bytes; unencodable text (lone surrogates) is a 422, not a 500."""
        try:
            return encode_event(record)
        except Invalid as exc:
            raise api_error(exc) from None


def command(
    kind: str,
    customer_id: str,
    event_type: str,
    payload: dict[str, Any],
    now_ms: int,
    target_event_id: str | None = None,
    reference: str | None = None,
    brand_id: str | None = None,
    reply_to: str | None = None,
    referral_code: str | None = None,
) -> dict[str, Any]:
    """A command Event on events.loyalty (FULFILL, CANCEL, REVERSE, REGISTER, CONSENT, IDENTIFY).

    Commands on an event get a deterministic id (customer:kind:target) so a retried command is
    applied once; others follow the event rule (uuid5 of the reference, else uuid4).
    `referral_code` is the code a registering customer was referred with (the Event field the
    processor claims for REGISTRATION events and REGISTER commands alike).
    """
    ref = reference
    if ref is None and target_event_id is not None:
        ref = f"{kind}:{target_event_id}"
    return {
        "id": event_id(customer_id, ref),
        "kind": kind,
        "customer_id": customer_id,
        "type": event_type,
        "path": "loyalty",
        "reference": reference,
        "brand_id": brand_id,
        "issued_at": now_ms,
        "received_at": now_ms,
        "properties": "{}",
        "fulfilled": True,
        "reserve": None,
        "redeem": [],
        "referral_code": referral_code,
        "coupon_code": None,
        "tags": [],
        "metadata": "{}",
        "target_event_id": target_event_id,
        "payload": _payload(payload),
        "reply_to": reply_to,
    }


def _payload(payload: dict[str, Any]) -> str:
    try:
        return dump_json(payload, "payload")
    except Invalid as exc:
        raise api_error(exc) from None
