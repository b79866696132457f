"""/customers: registration, consent, identification and direct points (commands), and the
wallet (sink read)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ingest import consent as consents
from ingest import customer_history as history
from ingest.dependencies import Ingest, IngestState, api_key, require
from ingest.errors import ApiError
from ingest.events import command
from ingest.inputs import NO_CONTROL_PATTERN, refuse
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
from ingest.routers.common import ERRORS, NOT_FOUND, PathId, Timeout, Wait, clean_body, instant, iso_time
from ingest.submit import submit, unavailable
from plumbing.producer import Unavailable
from schemas.program import Program
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
    """Set consent (Masivo's consent object): the purposes, vendors and fields given; what is
    left out keeps its current value."""
    record = command("CONSENT", customer_id, "CONSENT", consents.command_payload(body), state.clock())
    return await submit(state, record, wait, timeout)


@router.get(
    "/{customer_id}/consent", response_model=DataResponse, responses=ERRORS, dependencies=CLEAN
)
async def get_consent(customer_id: PathId, state: Ingest) -> dict:
    """`{consent: {consent_string, version, consent_timestamp, customer_id, purposes, vendors}}`
    as the sink last stored it; with none stored (or no such customer yet) every purpose is
    true, as the engine then treats the customer."""
    try:
        found = await state.lookup.customer(customer_id)
    except StoreUnavailable:
        raise unavailable(state, "customer store unavailable") from None
    shown = (found or {}).get("customer", {}).get("consent")
    if not isinstance(shown, dict) or "purposes" not in shown:
        shown = consents.consent_object(customer_id, None, None)
    return {"data": {"consent": shown}}


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


# -- history (sink tables, eventually consistent) -----------------------------------------------
class PageResponse(BaseModel):
    data: list[dict[str, Any]]
    limit: int
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at the end")


Name = Annotated[str, Field(min_length=1, max_length=64, pattern=NO_CONTROL_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=history.MAX_LIMIT, description="rows per page (default 50)")]
Cursor = Annotated[str | None, Query(max_length=1024, pattern=r"^[A-Za-z0-9_-]+$", description="next_cursor")]
Since = Annotated[str | None, iso_time("from this time on (ISO 8601, inclusive)")]
Until = Annotated[str | None, iso_time("before this time (ISO 8601, exclusive)")]
READ = {"response_model": PageResponse, "responses": ERRORS, "dependencies": CLEAN}


def _page(limit: int, cursor: str | None, since: str | None, until: str | None, **filters: Any):
    window = {"since": instant("since", since), "until": instant("until", until)}
    return history.Page(limit, history.decode_cursor(cursor), **window, **filters)


async def _history(state: IngestState, kind: str, customer_id: str, page: history.Page) -> dict:
    try:
        rows, cursor = await state.lookup.history(kind, customer_id, page)
    except StoreUnavailable:
        raise unavailable(state, "history store unavailable") from None
    return {"data": rows, "limit": page.limit, "next_cursor": cursor}


@router.get(
    "/{customer_id}", response_model=DataResponse, responses={**ERRORS, **NOT_FOUND}, dependencies=CLEAN
)
async def get_customer(customer_id: PathId, state: Ingest) -> dict:
    """The customer object as the sinks last wrote it: `customer` (status, tier_id, metrics,
    consent, traits) and a `wallet` summary (balances, next expirations)."""
    try:
        found = await state.lookup.customer(customer_id)
    except StoreUnavailable:
        raise unavailable(state, "customer store unavailable") from None
    if found is None:
        raise ApiError(404, f"no customer {customer_id!r}")
    wallet = found.get("wallet")
    if isinstance(wallet, dict) and wallet.get("totals"):
        program = state.programs.current()
        totals = [{**t, "reward": _reward(program, t.get("reward_id"))} for t in wallet["totals"]]
        found = {**found, "wallet": {**wallet, "totals": totals}}
    return {"data": {"customer_id": customer_id, **found}}


def _reward(program: Program, reward_id: Any) -> dict[str, Any] | None:
    """A wallet total's `reward` (Masivo's reward object) from the current program."""
    reward = next((r for r in program.rewards if r.id == reward_id), None)
    if reward is None:
        return None
    kind = "POINTS" if reward.kind == "points" else "OTHER"
    days = reward.expires_after_days
    return {"id": reward.id, "name": reward.name, "type": kind, "expires_after_days": days}


@router.get("/{customer_id}/events", **READ)
async def customer_events(
    customer_id: PathId,
    state: Ingest,
    type: Annotated[list[Name], Query(description="event types (repeat for several)")] = [],  # noqa: A002, B006
    status: Annotated[list[Name], Query(description="statuses (repeat for several)")] = [],  # noqa: B006
    since: Since = None,
    until: Until = None,
    limit: Limit = history.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict:
    """The customer's events and commands, newest first (issued_at, then id), with filters."""
    page = _page(limit, cursor, since, until, types=type, statuses=status)
    return await _history(state, "events", customer_id, page)


@router.get("/{customer_id}/ledger", **READ)
async def customer_ledger(
    customer_id: PathId,
    state: Ingest,
    kind: Annotated[list[Name], Query(description="line kinds (repeat for several)")] = [],  # noqa: B006
    since: Since = None,
    until: Until = None,
    limit: Limit = history.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict:
    """The customer's ledger lines, newest first, each with `why` (campaign and rule, event,
    adjustment reason, expiry date, the line it came out of)."""
    return await _history(state, "ledger", customer_id, _page(limit, cursor, since, until, types=kind))


@router.get("/{customer_id}/tiers", **READ)
async def customer_tiers(
    customer_id: PathId,
    state: Ingest,
    since: Since = None,
    until: Until = None,
    limit: Limit = history.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict:
    """The customer's tier changes (upgrades and downgrades, with what triggered them), newest first."""
    return await _history(state, "tiers", customer_id, _page(limit, cursor, since, until))


class BadgesResponse(BaseModel):
    data: list[dict[str, Any]]


@router.get("/{customer_id}/badges", response_model=BadgesResponse, responses=ERRORS, dependencies=CLEAN)
async def customer_badges(
    customer_id: PathId,
    state: Ingest,
    revoked: Annotated[bool, Query(description="also list badges taken back (count 0)")] = False,
) -> dict:
    """The customer's badges as the sink last wrote them (customer_badges), latest award first:
    each with how many times it is held (`count`), when, what awarded it (achievement or
    campaign, trigger event) and the program's description and image."""
    try:
        rows = await state.lookup.badges(customer_id, revoked)
    except StoreUnavailable:
        raise unavailable(state, "badge store unavailable") from None
    program = state.programs.current()
    out = []
    for row in rows:
        badge = program.badge(row["badge_id"])
        shown = {"description": badge.description, "image_url": badge.image_url} if badge else {}
        out.append({**row, "badge_name": (badge.name if badge else None) or row["badge_name"], **shown})
    return {"data": out}
