"""/customers: registration, consent, identification and direct points (commands), and the
wallet (sink read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from ingest.dependencies import Ingest, IngestState, api_key, require
from ingest.errors import ApiError
from ingest.events import command
from ingest.inputs import refuse
from ingest.lookup import StoreUnavailable
from ingest.models import (
    AcceptedResponse,
    ConsentIn,
    CustomerIn,
    DataResponse,
    IdentifyIn,
    ProcessedResponse,
)
from ingest.points import PointsIn, adjust_command, audit_value
from ingest.producer import Unavailable
from ingest.routers.common import ERRORS, NOT_FOUND, PathId, Timeout, Wait, clean_body
from ingest.submit import submit, unavailable
from schemas.topics import ADMIN_AUDIT

# Direct points need the `adjust` scope (not implied by `admin`: who may configure the program
# is not who may hand out points), the other writes `ingest`.
Adjust = Annotated[IngestState, Depends(require("adjust"))]




async def clean_adjust_body(request: Request, _: Adjust) -> None:
    """common.clean_body for the adjust scope (its 401/403 comes before any 422)."""
    refuse(await request.body())


# each route names its scope: a router-wide `ingest` dependency would also guard /points
router = APIRouter(prefix="/customers", tags=["customers"])
CLEAN = [Depends(clean_body)]
RESPONSES = {**ERRORS, 200: {"model": ProcessedResponse}}
OpenLines = Annotated[bool, Query(description="Also list every open ledger line (data.lines).")]


@router.post("", status_code=202, response_model=AcceptedResponse, responses=RESPONSES, dependencies=CLEAN)
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


@router.patch(
    "/{customer_id}/consent",
    status_code=202,
    response_model=AcceptedResponse,
    responses=RESPONSES,
    dependencies=CLEAN,
)
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
    "/{customer_id}/identify",
    status_code=202,
    response_model=AcceptedResponse,
    responses=RESPONSES,
    dependencies=CLEAN,
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


@router.get(
    "/{customer_id}/wallet",
    response_model=DataResponse,
    responses={**ERRORS, **NOT_FOUND},
    dependencies=CLEAN,
)
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


@router.post(
    "/{customer_id}/points",
    status_code=202,
    response_model=AcceptedResponse,
    responses=RESPONSES,
    dependencies=[Depends(clean_adjust_body)],
)
async def points(
    request: Request,
    state: Adjust,
    customer_id: PathId,
    body: PointsIn,
    wait: Wait = False,
    timeout: Timeout = None,
) -> JSONResponse:
    """Credit (amount > 0) or debit (amount < 0) a reward directly: an ADJUST command the
    loyalty processor applies once per customer + reference; audited once Kafka holds it."""
    program = state.programs.current()
    actor = state.config.key_name(api_key(request) or "")
    record = adjust_command(customer_id, body, program, actor, state.clock())
    response = await submit(state, record, wait, timeout)
    try:
        await state.producer.send(ADMIN_AUDIT, customer_id, audit_value(record, body, actor, program.version))
    except Unavailable as exc:  # a retry with the same reference re-sends both, applied once
        raise unavailable(state, f"adjustment accepted but not yet audited: {exc}") from None
    return response
