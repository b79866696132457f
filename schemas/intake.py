"""How a behaviour event gets in: its JSON body (EventIn), the checks, the id, the Avro record
and the route. One code path for every way in: HTTP ingest (ingest/events.py), the
events.inbound router (processors/router), the producer helper (schemas/producer.py); the
loyalty processor re-checks type and properties with `check_type` for records that came
straight to events.loyalty.

Failures raise `Invalid` with (path, reason) fields, the same ones ingest answers with a 422.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from schemas.codec import default_codec
from schemas.event_types import CompiledType, Types
from schemas.ids import name_uuid
from schemas.inputs import JSON_OBJECT_MARK, MAX_AMOUNT, NO_CONTROL_PATTERN, printable, problems
from schemas.topics import EVENTS_LOYALTY, EVENTS_TRACKING

Fields = list[tuple[str, str]]


class Invalid(ValueError):
    """An event refused with (path, reason) fields; ingest answers it as a 422."""

    def __init__(self, message: str, fields: Fields | None = None, code: str = "validation_error") -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.fields)


def safe(text: Any) -> str:
    """Text that always encodes as UTF-8 (inputs may carry lone surrogates)."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(code: str, message: str, fields: Fields = ()) -> dict[str, Any]:
    """{"error": {code, message, fields: [{path, reason}]}}: ingest's error body."""
    return {
        "error": {
            "code": code,
            "message": safe(message),
            "fields": [{"path": safe(p), "reason": safe(r)} for p, r in fields],
        }
    }


# -- the JSON body -----------------------------------------------------------------------------
Id = Annotated[str, Field(min_length=1, max_length=256, pattern=NO_CONTROL_PATTERN)]
ShortText = Annotated[str, Field(max_length=256, pattern=NO_CONTROL_PATTERN)]


def _iso_text(value: Any) -> Any:
    """issued_at is ISO 8601 text: a number would be read as a Unix time, a bool as 0/1."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string")
    return value


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_text), Field(strict=False)]


def _integral(value: Any) -> Any:
    """JSON Schema's integer includes 1.0; strict mode alone would refuse it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]
# Free-form objects; the spec states the input rules (schemas/inputs.py) the server applies.
JsonObject = Annotated[dict[str, Any], WithJsonSchema(JSON_OBJECT_MARK)]


class Body(BaseModel):
    """Strict: true/false only for booleans, integers for integers (no "yes", 0 or "5")."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class RedeemItem(Body):
    """A reward to take from the wallet; Masivo names the reward `id`, we `reward_id`."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["reward_id"]}, {"required": ["id"]}]}
    )

    reward_id: Id | None = None
    id: Id | None = Field(default=None, description="Masivo's name for reward_id.")
    amount: float = Field(gt=0, le=MAX_AMOUNT)

    @model_validator(mode="after")
    def _one_id(self) -> RedeemItem:
        if (self.reward_id is None) == (self.id is None):
            raise ValueError("give exactly one of reward_id or id")
        return self

    def line(self) -> dict[str, Any]:
        """The Avro Redemption record."""
        return {"reward_id": self.reward_id or self.id, "amount": self.amount}


Money = Annotated[float, Field(ge=0, le=MAX_AMOUNT)]
Redeems = Annotated[list[RedeemItem], Field(max_length=100)]
Tags = Annotated[list[ShortText], Field(max_length=100)]


class Priced(Body):
    """What Masivo's order, its products and its shipping share."""

    value: Money | None = None
    discounted_value: Money | None = None
    redeem: Redeems = Field(default_factory=list)
    tags: Tags = Field(default_factory=list)
    metadata: JsonObject = Field(default_factory=dict)


class Product(Priced):
    """An order line (Masivo's products[]), or the product of an ADD_TO_CART event."""

    sku: Id
    amount: float = Field(default=1, gt=0, le=MAX_AMOUNT, description="Quantity.")


class Shipping(Priced):
    pass


class Order(Priced):
    """Masivo's order: rules read it as `order` (order.value, order.products)."""

    value: Money  # required here: the order's total
    purchase_id: Id | None = None
    channel_id: ShortText | None = None
    store_id: ShortText | None = None
    products: list[Product] = Field(default_factory=list, max_length=1000)
    shipping: Shipping | None = None
    payment_method: Literal["CREDIT", "DEBIT"] | None = None


class EventIn(Body):
    """One behaviour event as sent by a producer."""

    customer_id: Id
    type: Annotated[str, Field(min_length=1, max_length=64, pattern=NO_CONTROL_PATTERN)]
    reference: Id | None = Field(default=None, description="Idempotency key per customer.")
    issued_at: IsoDatetime | None = Field(
        default=None, description="ISO 8601; at most 72 h old, not in the future."
    )
    brand_id: ShortText | None = None
    properties: JsonObject = Field(default_factory=dict)
    fulfilled: bool = True
    reserve: Integer | None = Field(default=None, ge=1, le=3650, description="Reservation days.")
    redeem: Redeems = Field(default_factory=list)
    referral_code: ShortText | None = None
    coupon_code: ShortText | None = None
    tags: Tags = Field(default_factory=list)
    metadata: JsonObject = Field(default_factory=dict)
    # Masivo's shapes, carried in the stored properties under their own names (MASIVO_KEYS)
    platform: ShortText | None = Field(default=None, description="Masivo: the customer's platform.")
    order: Order | None = Field(default=None, description="Masivo's order (PURCHASE).")
    product: Product | None = Field(default=None, description="Masivo's product (ADD_TO_CART).")


# -- the checks and the record -------------------------------------------------------------------
@dataclass(frozen=True)
class EventLimits:
    """How old or early an issued_at may be (ingest: INGEST_MAX_EVENT_AGE_S, INGEST_CLOCK_SKEW_S)."""

    max_event_age_s: float = 72 * 3600
    clock_skew_s: float = 300.0

    @classmethod
    def from_env(cls) -> EventLimits:
        """The limits ingest is configured with, for the other ways in."""
        env = os.environ.get
        return cls(
            float(env("INGEST_MAX_EVENT_AGE_S", cls.max_event_age_s)),
            float(env("INGEST_CLOCK_SKEW_S", cls.clock_skew_s)),
        )


LIMITS = EventLimits()
SCREENED = object()  # `exact=SCREENED`: the caller's raw-byte scan (inputs.suspect) found nothing
_ITSELF = object()


def event_id(customer_id: str, reference: str | None) -> str:
    """Deterministic for customer + reference, so retries and replays map to one event.

    Equals str(uuid.uuid5(uuid.NAMESPACE_URL, f"{customer_id}:{reference}")); uuid4 without one.
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
        raise Invalid("value cannot be stored as JSON", [(path, str(exc))]) from None


def parse(value: Any) -> EventIn:
    """The JSON body as an EventIn, or Invalid naming each field pydantic refused."""
    try:
        return EventIn.model_validate(value)
    except ValidationError as exc:
        raise Invalid("event failed validation", validation_fields(exc.errors())) from None


def validation_fields(errors: list[dict], prefix: str = "") -> Fields:
    """Pydantic errors as (dotted path without a 'body' prefix, message), e.g. redeem.0.amount."""
    fields = []
    for err in errors:
        parts = [str(p) for p in err.get("loc", ())]
        if parts and parts[0] in ("body", "query", "path", "header"):
            parts = parts[1:]
        path = ".".join(parts) or "body"
        fields.append((f"{prefix}{path}" if prefix else path, err.get("msg", "invalid")))
    return fields


def check_type(types: Types, name: str, properties: dict[str, Any]) -> CompiledType:
    """The event type, if it is defined and `properties` match its JSON Schema; else Invalid."""
    etype = types.get(name)
    if etype is None:
        raise Invalid(
            f"unknown event type {name!r}",
            [("type", f"event type {name!r} is not defined in the program")],
            code="unknown_event_type",
        )
    found = etype.errors(properties)
    if found:
        raise Invalid("properties do not match the event type schema", found)
    return etype


def check_amount(properties: dict[str, Any]) -> None:
    """properties.amount, the figure campaigns earn on, must be a number within MAX_AMOUNT."""
    amount = properties.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return  # absent, or not a number: the event type's JSON Schema decides
    if not -MAX_AMOUNT <= amount <= MAX_AMOUNT:
        raise Invalid("amount out of range", [("properties.amount", f"must be within ±{MAX_AMOUNT:g}")])


def build_event(
    value: Any,
    types: Types,
    now_ms: int,
    limits: EventLimits = LIMITS,
    *,
    exact: Any = _ITSELF,
    reply_to: str | None = None,
) -> dict[str, Any]:
    """Check a JSON body as ingest does and build its Event record (schemas/avro/event.avsc).

    Input rules first (control characters, 64-bit numbers), walked on `value` itself, or on
    `exact` (the raw body parsed exactly), or not at all when `exact=SCREENED` (a raw-byte scan
    found nothing to walk). Then the body (EventIn), its type and properties, the amount and
    issued_at."""
    if exact is not SCREENED and (found := problems(value if exact is _ITSELF else exact)):
        raise Invalid("event failed validation", found)
    body = parse(value)
    properties = body.properties
    if body.order is not None and "amount" not in properties:
        properties = {**properties, "amount": body.order.value}  # what campaigns earn on
    etype = check_type(types, body.type, properties)
    check_amount(properties)
    return {
        "id": event_id(body.customer_id, body.reference),
        "kind": "EVENT",
        "customer_id": body.customer_id,
        "type": body.type,
        "path": etype.spec.path,
        "reference": body.reference,
        "brand_id": body.brand_id,
        "issued_at": issued_at(body, now_ms, limits),
        "received_at": now_ms,
        "properties": dump_json(carried(body, properties), "properties"),
        "fulfilled": body.fulfilled,
        "reserve": body.reserve,
        "redeem": redemptions(body),
        "referral_code": body.referral_code,
        "coupon_code": body.coupon_code,
        "tags": list(body.tags),
        "metadata": dump_json(body.metadata, "metadata"),
        "target_event_id": None,
        "payload": "{}",
        "reply_to": reply_to,
    }


# Masivo's envelope fields with no Avro field of their own: stored in `properties` under these
# names (no schema change); rules read `order` and `product` as variables of their own.
MASIVO_KEYS = ("platform", "order", "product")


def carried(body: EventIn, properties: dict[str, Any]) -> dict[str, Any]:
    """The properties to store: the type-checked ones plus Masivo's platform, order, product."""
    given = {k: getattr(body, k) for k in MASIVO_KEYS if getattr(body, k) is not None}
    if not given:
        return properties
    twice = [(k, f"given both as {k} and properties.{k}") for k in given if k in body.properties]
    if twice:
        raise Invalid("event failed validation", twice)
    dumped = {k: v if isinstance(v, str) else v.model_dump(exclude_none=True) for k, v in given.items()}
    return {**properties, **dumped}


def redemptions(body: EventIn) -> list[dict[str, Any]]:
    """The Redemption records: the event's redeem plus its order's, products' and shipping's
    (Masivo's redeem at each level), all taken from the wallet at once."""
    items = list(body.redeem)
    order = body.order
    if order is not None:
        items += order.redeem + [r for p in order.products for r in p.redeem]
        items += order.shipping.redeem if order.shipping else []
    if len(items) > 100:
        raise Invalid("too many redemptions", [("redeem", "at most 100, the order's included")])
    return [r.line() for r in items]


def issued_at(body: EventIn, now_ms: int, limits: EventLimits = LIMITS) -> int:
    """The event time in ms: now when absent, else within max age and clock skew."""
    if body.issued_at is None:
        return now_ms
    try:
        issued = to_ms(body.issued_at)
    except (OverflowError, ValueError, OSError):
        raise Invalid("bad issued_at", [("issued_at", "out of range")]) from None
    if issued < now_ms - limits.max_event_age_s * 1000:
        hours = limits.max_event_age_s / 3600
        raise Invalid("issued_at too old", [("issued_at", f"older than {hours:g} h")])
    if issued > now_ms + limits.clock_skew_s * 1000:
        raise Invalid("issued_at in the future", [("issued_at", "in the future")])
    return issued


def record_problem(types: Types, event: dict[str, Any]) -> Invalid | None:
    """Why an Event record that may have skipped ingest (produced straight to events.loyalty)
    must be rejected: its type is not defined, or its properties break the type's JSON Schema.
    Commands, and properties that are not a JSON object, are the consumer's own matter."""
    if event.get("kind", "EVENT") != "EVENT":
        return None
    try:
        properties = orjson.loads(event.get("properties") or "{}")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(properties, dict):
        return None
    try:
        check_type(types, event["type"], properties)
    except Invalid as exc:
        return _without_carried(types, event["type"], properties, exc)
    return None


def _without_carried(types: Types, name: str, properties: dict[str, Any], exc: Invalid) -> Invalid | None:
    """build_event checks the type's schema before it adds MASIVO_KEYS: a strict schema that
    refuses them is not a reason to reject the record."""
    if not any(k in properties for k in MASIVO_KEYS):
        return exc
    try:
        check_type(types, name, {k: v for k, v in properties.items() if k not in MASIVO_KEYS})
    except Invalid as again:
        return again
    return None


def encode_event(record: dict[str, Any]) -> bytes:
    """Avro single-object bytes; unencodable text (lone surrogates) is Invalid, not a crash."""
    try:
        return default_codec().encode("Event", record)
    except (UnicodeError, ValueError, TypeError, OverflowError) as exc:
        raise Invalid("event cannot be encoded", [("body", str(exc))]) from None


def topic_for(record: dict[str, Any]) -> str:
    """Tracking types go to events.tracking, everything else to events.loyalty."""
    return EVENTS_TRACKING if record["path"] == "tracking" else EVENTS_LOYALTY


def rejected_result(
    invalid: Invalid,
    event_id: str,
    customer_id: str,
    event_type: str,
    now_ms: int,
    config_version: int,
    event: dict[str, Any] | None = None,
    reply_to: str | None = None,
) -> dict[str, Any]:
    """A REJECTED Result (schemas/avro/result.avsc) whose detail carries ingest's 422 body
    under "error"; ids and texts with control characters are escaped so the sink can store it."""
    fields = [(storable(p), storable(r)) for p, r in invalid.fields]
    first = f"{fields[0][0]}: {fields[0][1]}" if fields else storable(invalid.message)
    detail = {**error_body(invalid.code, storable(invalid.message), fields), "duplicate": False}
    if event is not None:
        detail["event"] = event
    return {
        "event_id": storable(event_id),
        "customer_id": storable(customer_id),
        "type": storable(event_type),
        "kind": "EVENT",
        "status": "REJECTED",
        "reason": f"{invalid.code}: {first}",
        "points": 0.0,
        "config_version": config_version,
        "processed_at": now_ms,
        "reply_to": reply_to,
        "detail": orjson.dumps(detail).decode(),
    }


def storable(text: Any) -> str:
    """Text PostgreSQL and Avro take: lone surrogates and control characters escaped."""
    return printable(safe(text))
