"""/coupons/redeem: Masivo's coupon redemption, on top of our coupon campaigns.

A redemption is a COUPON_USE event carrying `coupon_code`: the loyalty processor's coupon path
(per-customer codes on the customer's partition, global ones claimed on the code's partition
via coupons.claims) decides it exactly as for any event with a code, so there is one coupon
logic, not two.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import JSONResponse
from pydantic import Field

from ingest.dependencies import Ingest
from ingest.errors import ApiError
from ingest.events import SCREENED
from ingest.models import AcceptedResponse, ProcessedResponse
from ingest.routers.common import ERRORS, NOT_FOUND, Timeout, Wait, clean_body
from ingest.submit import submit
from schemas.intake import Body as Strict
from schemas.intake import Id, ShortText
from schemas.program import Program

router = APIRouter(prefix="/coupons", tags=["coupons"])
COUPON_TYPE = "COUPON_USE"  # the event type a redemption is sent as (the program defines it)
PROCESSED = "Processed (wait=true)"


class CouponRedeemIn(Strict):
    """Masivo's body; `reference` (ours) makes a retried redemption one event."""

    customer_id: Id
    code: Annotated[ShortText, Field(min_length=1)]
    brand_id: ShortText | None = None
    platform: ShortText | None = None
    store_id: ShortText | None = None
    channel_id: ShortText | None = None
    reference: Id | None = None


def redeemable(program: Program, code: str) -> bool:
    """Some coupon campaign lists the code and is triggered by COUPON_USE events."""
    return any(
        c.kind == "coupon" and c.coupon and code in c.coupon.codes and COUPON_TYPE in c.triggers
        for c in program.campaigns
    )


def coupon_event(body: CouponRedeemIn) -> dict[str, Any]:
    """The event body: where the coupon was used goes to metadata (no type schema checks it)."""
    where = {k: v for k in ("store_id", "channel_id") if (v := getattr(body, k)) is not None}
    event = {"customer_id": body.customer_id, "type": COUPON_TYPE, "coupon_code": body.code}
    for key in ("brand_id", "platform", "reference"):
        if getattr(body, key) is not None:
            event[key] = getattr(body, key)
    return {**event, "metadata": where} if where else event


@router.post(
    "/redeem",
    status_code=202,
    response_model=AcceptedResponse,
    responses={**ERRORS, **NOT_FOUND, 200: {"model": ProcessedResponse, "description": PROCESSED}},
    dependencies=[Depends(clean_body)],
)
async def redeem(
    state: Ingest,
    body: Annotated[CouponRedeemIn, Body()],
    wait: Wait = False,
    timeout: Timeout = None,
) -> JSONResponse:
    """Redeem a coupon code: 202 with the event id (200 with the result if wait=true). 404 when
    no coupon campaign of the current program redeems the code on COUPON_USE events."""
    if not redeemable(state.programs.current(), body.code):
        raise ApiError(404, f"no coupon campaign redeems code {body.code!r}")
    record = state.builder.event(coupon_event(body), state.clock(), SCREENED)
    return await submit(state, record, wait, timeout)
