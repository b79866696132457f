"""The dashboard's FastAPI app: pages, their JSON, login, health and metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from psycopg_pool import ConnectionPool

from dashboard.auth import NotAuthenticated
from dashboard.config import DashboardConfig
from dashboard.db import TtlCache, make_pool
from dashboard.metrics import LATENCY, REQUESTS
from dashboard.rollups import Refresher
from dashboard.routers import (
    audiences,
    campaigns,
    customers,
    health,
    journeys,
    login,
    overview,
    segments,
    tiers,
    webhooks,
)

HERE = Path(__file__).parent
log = logging.getLogger("dashboard")
PAGE_ROUTERS = (overview, campaigns, tiers, audiences, journeys, webhooks, segments, customers)
# No inline script anywhere; Chart.js sizes canvases through element styles.
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"


def create_app(config: DashboardConfig | None = None, pool: ConnectionPool | None = None) -> FastAPI:
    """The app; `pool` lets tests and the benchmark share one (it is opened and closed here)."""
    config = config or DashboardConfig.from_env()
    pool = pool or make_pool(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=False)
        refresher = Refresher(config.database_url, config.rollup_s, config.segments_s)
        if config.rollups:
            refresher.start()
        log.info("dashboard ready", extra={"pages": len(PAGE_ROUTERS), "rollups": config.rollups})
        yield
        if config.rollups:
            refresher.stop()
        pool.close()

    app = FastAPI(title="Loyalty dashboard", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.config, app.state.pool = config, pool
    app.state.cache = TtlCache(config.cache_s)
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for module in (health, login, *PAGE_ROUTERS):
        app.include_router(module.router)
    _wire(app)
    return app


def _wire(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/overview", status_code=303)

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        if exc.api:
            return JSONResponse({"error": "admin key required"}, status_code=401)
        return RedirectResponse("/login", status_code=303)

    @app.middleware("http")
    async def observe(request: Request, call_next):  # noqa: ANN001, ANN202 - Starlette's signature
        began = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "other")
        elapsed = time.perf_counter() - began
        REQUESTS.labels(name, str(response.status_code)).inc()
        LATENCY.labels(name).observe(elapsed)
        _secure(response, request.url.path)
        if response.status_code >= 500:
            log.error("request failed", extra={"path": name, "status": response.status_code})
        return response


def _secure(response: Response, path: str) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if not path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"
