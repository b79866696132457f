"""Turn validated request bodies into `Event` records (schemas/avro/event.avsc).

Thin by design: checks the type exists, the properties match its JSON Schema and issued_at is
recent, assigns the id and the route. Rules, dedup and state live in the loyalty processor.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from ingest.config import IngestConfig
from ingest.errors import ApiError, validation_fields
from ingest.inputs import check_amount
from ingest.models import EventIn
from ingest.programs import TypeRegistry
from schemas.codec import default_codec
from schemas.ids import name_uuid
from schemas.topics import EVENTS_LOYALTY, EVENTS_TRACKING


def event_id(customer_id: str, reference: str | None) -> str:
    """Deterministic for customer + reference, so retries and replays map to one event.

    Equals str(uuid.uuid5(uuid.NAMESPACE_URL, f"{customer_id}:{reference}")).
    """
    if reference is None:
        return str(uuid.uuid4())
    return name_uuid(f"{customer_id}:{reference}")


def to_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def dump_json(value: Any, path: str) -> str:
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise ApiError(422, "value cannot be stored as JSON", fields=[(path, str(exc))]) from None


class EventBuilder:
    """Validates events against the current program and builds Avro-ready records."""

    def __init__(self, config: IngestConfig, types: TypeRegistry) -> None:
        self.config = config
        self.types = types
        self._codec = default_codec()

    def parse(self, raw: Any) -> EventIn:
        """Validate a raw bulk item (dict) into an EventIn, as ApiError(422) on failure."""
        try:
            return EventIn.model_validate(raw)
        except ValidationError as exc:
            fields = validation_fields(exc.errors())
            raise ApiError(422, "event failed validation", fields=fields) from None

    def build(self, body: EventIn, now_ms: int, reply_to: str | None = None) -> dict[str, Any]:
        etype = self.types.lookup(body.type)
        if etype is None:
            raise ApiError(
                422,
                f"unknown event type {body.type!r}",
                code="unknown_event_type",
                fields=[("type", f"event type {body.type!r} is not defined in the program")],
            )
        problems = etype.errors(body.properties)
        if problems:
            raise ApiError(422, "properties do not match the event type schema", fields=problems)
        check_amount(body.properties)
        issued = self._issued_at(body, now_ms)
        return {
            "id": event_id(body.customer_id, body.reference),
            "kind": "EVENT",
            "customer_id": body.customer_id,
            "type": body.type,
            "path": etype.spec.path,
            "reference": body.reference,
            "brand_id": body.brand_id,
            "issued_at": issued,
            "received_at": now_ms,
            "properties": dump_json(body.properties, "properties"),
            "fulfilled": body.fulfilled,
            "reserve": body.reserve,
            "redeem": [r.model_dump() for r in body.redeem],
            "referral_code": body.referral_code,
            "coupon_code": body.coupon_code,
            "tags": list(body.tags),
            "metadata": dump_json(body.metadata, "metadata"),
            "target_event_id": None,
            "payload": "{}",
            "reply_to": reply_to,
        }

    def _issued_at(self, body: EventIn, now_ms: int) -> int:
        if body.issued_at is None:
            return now_ms
        try:
            issued = to_ms(body.issued_at)
        except (OverflowError, ValueError, OSError):
            raise ApiError(422, "bad issued_at", fields=[("issued_at", "out of range")]) from None
        if issued < now_ms - self.config.max_event_age_s * 1000:
            hours = self.config.max_event_age_s / 3600
            raise ApiError(422, "issued_at too old", fields=[("issued_at", f"older than {hours:g} h")])
        if issued > now_ms + self.config.clock_skew_s * 1000:
            raise ApiError(422, "issued_at in the future", fields=[("issued_at", "in the future")])
        return issued

    def encode(self, record: dict[str, Any]) -> bytes:
        """Avro single-object bytes; unencodable text (lone surrogates) is a 422, not a 500."""
        try:
            return self._codec.encode("Event", record)
        except (UnicodeError, ValueError, TypeError, OverflowError) as exc:
            raise ApiError(422, "event cannot be encoded", fields=[("body", str(exc))]) from None


def topic_for(record: dict[str, Any]) -> str:
    return EVENTS_TRACKING if record["path"] == "tracking" else EVENTS_LOYALTY


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
        "payload": dump_json(payload, "payload"),
        "reply_to": reply_to,
    }
