"""Request and response bodies (pydantic): the shapes published in /openapi.json."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from schemas.inputs import NO_CONTROL_PATTERN
from schemas.intake import (  # noqa: F401 - the event body is shared with the router and helper
    Body,
    EventIn,
    Id,
    Integer,
    IsoDatetime,
    JsonObject,
    RedeemItem,
    ShortText,
)


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
    link_tracking: Purpose
    leaderboards: Purpose  # shown on leaderboards (docs/loyalty.md, "Leaderboards")

    @model_validator(mode="after")
    def _some(self) -> Purposes:
        if not any(getattr(self, name) is not None for name in type(self).model_fields):
            raise ValueError("set at least one purpose")
        return self


PURPOSES = tuple(Purposes.model_fields)  # with none stored, each is true
VendorId = Annotated[str, Field(min_length=1, max_length=256, pattern=NO_CONTROL_PATTERN)]
# pydantic would state the key pattern as patternProperties, leaving other keys unconstrained
VENDORS_SCHEMA = {
    "type": "object",
    "maxProperties": 1000,
    "propertyNames": {"minLength": 1, "maxLength": 256, "pattern": NO_CONTROL_PATTERN},
    "additionalProperties": {"type": "boolean"},
    "description": "vendor id -> consent",
}
Vendors = Annotated[dict[VendorId, bool], Field(max_length=1000), WithJsonSchema(VENDORS_SCHEMA)]


class ConsentIn(Body):
    """Masivo's consent object: any of its fields, each left out keeps its stored value
    (`vendors` and `purposes` per key). `customer_id` is accepted, so a GET answer can be sent
    back as is, and ignored: the path names the customer."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    purposes: Purposes | None = None
    vendors: Vendors | None = None
    consent_string: Annotated[str, Field(max_length=8192, pattern=NO_CONTROL_PATTERN)] | None = Field(
        default=None, description="An IAB TCF consent string, stored as given."
    )
    version: ShortText | None = None
    consent_timestamp: IsoDatetime | None = None
    customer_id: Id | None = None

    @model_validator(mode="after")
    def _some(self) -> ConsentIn:
        if not self.model_fields_set:
            raise ValueError("set at least one of purposes, vendors, consent_string, version, "
                             "consent_timestamp")
        return self


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


class VersionedResponse(BaseModel):
    """An admin resource (or the result of a write) and the program version it belongs to;
    the same version is the response's ETag."""

    data: dict[str, Any]
    version: int


class VersionedList(BaseModel):
    data: list[dict[str, Any]]
    version: int


class ListResponse(BaseModel):
    data: list[dict[str, Any]]


class AuditPage(BaseModel):
    data: list[dict[str, Any]]
    limit: int
    offset: int
    next_offset: int | None = Field(default=None, description="offset of the next page; null at the end")


class RollbackIn(Body):
    version: int = Field(ge=1, le=2**31 - 1, description="the version whose content becomes the new version")


class DryRunResponse(BaseModel):
    """?dry_run=true on a program write: its answer had it been published, and the change."""

    data: dict[str, Any]
    version: int = Field(description="the version the write would become")
    dry_run: Literal[True] = True
    version_before: int = Field(description="the current version it was checked against (the ETag)")
    summary: str
    changes: list[dict[str, Any]] = Field(description="path, before, after (secrets masked)")
