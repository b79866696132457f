"""/customers: registration, consent, identification (commands) and the wallet (sink read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from ingest.dependencies import Ingest
from ingest.errors import ApiError
from ingest.events import command
from ingest.lookup import StoreUnavailable
from ingest.models import (
    AcceptedResponse,
    ConsentIn,
    CustomerIn,
    DataResponse,
    IdentifyIn,
    ProcessedResponse,
)
from ingest.routers.common import ERRORS, NOT_FOUND, PathId, Timeout, Wait, clean_body
from ingest.submit import submit, unavailable

router = APIRouter(prefix="/customers", tags=["customers"], dependencies=[Depends(clean_body)])
RESPONSES = {**ERRORS, 200: {"model": ProcessedResponse}}
OpenLines = Annotated[bool, Query(description="Also list every open ledger line (data.lines).")]


@router.post("", status_code=202, response_model=AcceptedResponse, responses=RESPONSES)
async def register(
    state: Ingest,
    body: CustomerIn,
    wait: Wait = False,
    timeout: Timeout = None,
) -> JSONResponse:
    """Register a customer (REGISTER command, type REGISTRATION); migrated skips the webhook."""
    payload = {"migrated": body.migrated, "anonymous": body.anonymous, "customer": body.customer}
    record = command(
        "REGISTER",
        body.customer_id,
        "REGISTRATION",
        payload,
        state.clock(),
        reference=body.reference,
        brand_id=body.brand_id,
        referral_code=body.referral_code,
    )
    return await submit(state, record, wait, timeout)


@router.patch("/{customer_id}/consent", status_code=202, response_model=AcceptedResponse, responses=RESPONSES)
async def consent(
    state: Ingest,
    customer_id: PathId,
    body: ConsentIn,
    wait: Wait = False,
    timeout: Timeout = None,
) -> JSONResponse:
    """Set consent purposes; purposes left out keep their current value."""
    purposes = body.purposes.model_dump(exclude_none=True)
    if not purposes:
        raise ApiError(422, "no purposes given", fields=[("purposes", "set at least one purpose")])
    record = command("CONSENT", customer_id, "CONSENT", {"purposes": purposes}, state.clock())
    return await submit(state, record, wait, timeout)


@router.patch(
    "/{customer_id}/identify", status_code=202, response_model=AcceptedResponse, responses=RESPONSES
)
async def identify(
    state: Ingest,
    customer_id: PathId,
    body: IdentifyIn | None = None,
    wait: Wait = False,
    timeout: Timeout = None,
) -> JSONResponse:
    """Mark an anonymous customer as identified (audiences start evaluating them)."""
    reference = body.reference if body else None
    record = command("IDENTIFY", customer_id, "IDENTIFY", {}, state.clock(), reference=reference)
    return await submit(state, record, wait, timeout)


@router.get("/{customer_id}/wallet", response_model=DataResponse, responses={**ERRORS, **NOT_FOUND})
async def wallet(customer_id: PathId, state: Ingest, lines: OpenLines = False) -> dict:
    """The customer's wallet as last written by the sink (eventually consistent); with
    `lines=true` also every open ledger line (`data.lines`, amount = what is left)."""
    try:
        row = await state.lookup.wallet(customer_id)
        if row is not None and lines:
            row = {**row, "lines": await state.lookup.open_lines(customer_id)}
    except StoreUnavailable:
        raise unavailable(state, "wallet store unavailable") from None
    if row is None:
        raise ApiError(404, f"no wallet for customer {customer_id!r}")
    return {"data": row}
