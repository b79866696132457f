"""Request and response bodies (pydantic): the shapes published in /openapi.json."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from ingest.inputs import JSON_OBJECT_MARK, MAX_AMOUNT, NO_CONTROL_PATTERN

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
# Free-form objects; the spec states the input rules (ingest/inputs.py) the server applies.
JsonObject = Annotated[dict[str, Any], WithJsonSchema(JSON_OBJECT_MARK)]


class Body(BaseModel):
    """Strict: true/false only for booleans, integers for integers (no "yes", 0 or "5")."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class RedeemItem(Body):
    reward_id: Id
    amount: float = Field(gt=0, le=MAX_AMOUNT)


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
    redeem: list[RedeemItem] = Field(default_factory=list, max_length=100)
    referral_code: ShortText | None = None
    coupon_code: ShortText | None = None
    tags: list[ShortText] = Field(default_factory=list, max_length=100)
    metadata: JsonObject = Field(default_factory=dict)


class CommandIn(Body):
    """Fulfil / cancel / reverse an earlier event; customer_id skips the event lookup."""

    reason: ShortText | None = None
    customer_id: Id | None = None


# A purpose is true or false when given; left out, it keeps its value (null is not a value).
Purpose = Annotated[bool, Field(default=None)]


class Purposes(Body):
    """At least one purpose (minProperties in the spec, as the server requires)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    behavioral_campaigns: Purpose
    coupon_campaigns: Purpose
    punchcard_campaigns: Purpose
    email_marketing: Purpose
    push_notifications: Purpose


class ConsentIn(Body):
    purposes: Purposes


class CustomerIn(Body):
    """Registration: a REGISTER command of type REGISTRATION."""

    customer_id: Id
    migrated: bool = Field(default=False, description="Register without the welcome webhook.")
    anonymous: bool = False
    reference: Id | None = None
    brand_id: ShortText | None = None
    referral_code: ShortText | None = Field(
        default=None, description="The code this customer was referred with (claims the referral)."
    )
    customer: JsonObject = Field(
        default_factory=dict, description="Profile data: name, email, phone, birthday, ..."
    )


class IdentifyIn(Body):
    reference: Id | None = None


class QueuePosition(BaseModel):
    topic: str
    partition: int
    offset: int


class Accepted(BaseModel):
    id: str
    customer_id: str
    type: str
    kind: str = "EVENT"
    reference: str | None = None
    status: Literal["PENDING"] = "PENDING"
    queue: QueuePosition


class AcceptedResponse(BaseModel):
    data: Accepted
    message: str = "Event enqueued for processing"


class ProcessedResponse(BaseModel):
    """?wait=true answer: the loyalty processor's result for the event."""

    data: dict[str, Any]
    message: str = "Event processed"


class BulkItem(BaseModel):
    index: int
    status: Literal["accepted", "rejected"]
    id: str | None = None
    errors: list[dict[str, str]] = Field(default_factory=list)


class BulkResponse(BaseModel):
    data: list[BulkItem]
    accepted: int
    rejected: int


class DataResponse(BaseModel):
    data: dict[str, Any]


class ErrorField(BaseModel):
    path: str
    reason: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[ErrorField] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    error: ErrorDetail
