"""Customer lookup: one customer's profile, wallet, ledger, events, tiers, audiences, journeys."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from dashboard import queries
from dashboard.auth import require_admin
from dashboard.routers.common import page_data, range_of, render

router = APIRouter(dependencies=[Depends(require_admin)])
MAX_ID = 200


@router.get("/customers", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request) -> HTMLResponse:
    return render(request, "customers", "Customer lookup", "customers.html")


@router.get("/api/customers/{customer_id}")
def api(request: Request, customer_id: str, range: str | None = None) -> dict:  # noqa: A002
    if not customer_id.strip() or len(customer_id) > MAX_ID:
        raise HTTPException(400, f"customer id must be 1..{MAX_ID} characters")
    rng = range_of(range)
    data = page_data(
        request, "customers", rng, lambda conn: queries.customer(conn, rng, customer_id), customer_id
    )
    if not data["found"]:
        raise HTTPException(404, f"no customer {customer_id!r} in the sink's tables")
    return data
