"""Liveness, readiness (PostgreSQL reachable through the pool) and Prometheus metrics; no auth."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dashboard.metrics import DB_UP

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok", "pid": os.getpid()}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """200 when a pooled connection answers SELECT 1 within 2 s, else 503."""
    try:
        with request.app.state.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        DB_UP.set(0)
        return JSONResponse({"status": "unavailable", "database": type(exc).__name__}, status_code=503)
    DB_UP.set(1)
    return JSONResponse({"status": "ok", "database": "up"})


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
