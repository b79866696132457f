"""What every page has: an HTML shell (rendered once) and /api/<page>?range= (its live data)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from dashboard.auth import require_admin
from dashboard.metrics import CACHE, QUERY
from dashboard.ranges import DEFAULT_RANGE, RANGES, Range, parse_range

NAV = (
    ("overview", "Overview"),
    ("campaigns", "Campaigns"),
    ("tiers", "Tiers"),
    ("audiences", "Audiences"),
    ("journeys", "Journeys"),
    ("webhooks", "Webhooks"),
    ("segments", "Segments"),
    ("customers", "Customer lookup"),
)


def range_of(value: str | None) -> Range:
    try:
        return parse_range(value)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def render(request: Request, page: str, title: str, template: str = "page.html") -> HTMLResponse:
    config = request.app.state.config
    context = {
        "page": page,
        "title": title,
        "nav": NAV,
        "ranges": list(RANGES),
        "default_range": DEFAULT_RANGE,
        "refresh_ms": int(config.refresh_s * 1000),
    }
    return request.app.state.templates.TemplateResponse(request, template, context)


def page_data(request: Request, page: str, rng: Range, read: Callable[[Any], dict], *key: Any) -> dict:
    """The page's JSON, from the shared cache or read now through the pool."""

    def compute() -> dict:
        began = time.perf_counter()
        with request.app.state.pool.connection() as conn:
            data = read(conn)
        QUERY.labels(page).observe(time.perf_counter() - began)
        generated = datetime.now(UTC).isoformat()
        return {
            "page": page,
            "range": rng.name,
            "bucket": rng.bucket_label,
            "generated_at": generated,
            **data,
        }

    data, hit = request.app.state.cache.get((page, rng.name, *key), compute)
    CACHE.labels("hit" if hit else "miss").inc()
    return data


def page_router(name: str, title: str, read: Callable[[Any, Range], dict]) -> APIRouter:
    """GET /<name> (the page) and GET /api/<name>?range= (its data), both behind the admin key."""
    router = APIRouter(dependencies=[Depends(require_admin)])

    @router.get(f"/{name}", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request) -> HTMLResponse:
        return render(request, name, title)

    @router.get(f"/api/{name}")
    def api(request: Request, range: str | None = None) -> dict:  # noqa: A002 - the query parameter
        rng = range_of(range)
        return page_data(request, name, rng, lambda conn: read(conn, rng))

    return router
