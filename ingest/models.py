"""Request and response bodies (pydantic): the shapes published in /openapi.json."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
    leaderboards: Purpose  # shown on leaderboards (docs/loyalty.md, "Leaderboards")


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
