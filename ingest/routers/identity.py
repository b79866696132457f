"""PATCH /customers/{id}/identify/anonymous: an anonymous customer becomes a known id.

Ingest only checks the body and sends one IDENTIFY command keyed by the anonymous id; whether
that id is anonymous (and `new_id` another customer) is the loyalty processor's to decide: it
rejects the command with a reason otherwise. The move itself is processors/loyalty/identity.py.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import Field

from ingest.dependencies import Ingest
from ingest.events import command
from ingest.models import AcceptedResponse, Body, Id, IsoDatetime, JsonObject, ProcessedResponse, ShortText
from ingest.routers.common import ERRORS, PathId, Timeout, Wait, clean_body
from ingest.submit import submit

router = APIRouter(prefix="/customers", tags=["customers"])
RESPONSES = {**ERRORS, 200: {"model": ProcessedResponse}}
PROFILE_FIELDS = ("name", "email", "gender", "dob", "document_type", "document_number", "country",
                  "tags", "devices", "email_status", "metadata")  # fmt: skip


class Device(Body):
    """One of Masivo's `devices[]` (a push token and what it runs on). A model rather than a
    free-form object: schemathesis could not reliably generate arrays of the recursive
    JsonObject (an order-dependent InvalidSchema in the fuzz run)."""

    device_token: ShortText | None = None
    device_info: JsonObject | None = None
    expires_at: ShortText | None = None
    created_at: ShortText | None = None


class IdentifyAnonymousIn(Body):
    """Masivo's body: `new_id` and the profile data of the known customer (kept in its
    customer data). Consent is set with PATCH /customers/{new_id}/consent."""

    new_id: Id = Field(description="The known id the anonymous customer becomes.")
    reference: Id | None = Field(default=None, description="Idempotency key (default: the new_id).")
    name: ShortText | None = None
    email: ShortText | None = None
    gender: ShortText | None = None
    dob: IsoDatetime | None = None
    document_type: ShortText | None = None
    document_number: ShortText | None = None
    country: ShortText | None = None
    tags: JsonObject | list[ShortText] | None = None
    devices: list[Device] | None = Field(default=None, max_length=100)
    email_status: ShortText | None = None
    metadata: JsonObject | None = None


@router.patch(
    "/{customer_id}/identify/anonymous",
    status_code=202,
    response_model=AcceptedResponse,
    responses=RESPONSES,
    dependencies=[Depends(clean_body)],
)
async def identify_anonymous(
    state: Ingest,
    customer_id: PathId,
    body: IdentifyAnonymousIn,
    wait: Wait = False,
    timeout: Timeout = None,
) -> JSONResponse:
    """Move the anonymous customer's wallet, history and progress to `new_id` (once, across
    partitions), then CUSTOMER_ANONYMOUS_TO_REGISTERED. With `wait`, the answer is the
    anonymous side's result (`detail.merged_into`); the known id applies the move right after."""
    given = body.model_dump(include=set(PROFILE_FIELDS), exclude_none=True)
    profile: dict[str, Any] = {k: given[k] for k in PROFILE_FIELDS if k in given}  # body order
    if body.dob is not None:
        profile["dob"] = body.dob.isoformat()
    payload = {"new_id": body.new_id, "customer": profile}
    reference = body.reference or f"identify:{body.new_id}"
    record = command("IDENTIFY", customer_id, "IDENTIFY", payload, state.clock(), reference=reference)
    return await submit(state, record, wait, timeout)
