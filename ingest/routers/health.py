"""Operational endpoints: liveness and Prometheus metrics (no auth)."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ingest.metrics import scrape

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz(request: Request) -> dict:
    """Liveness; `instance_id` and `pid` say which worker process answered."""
    return {"status": "ok", "instance_id": request.app.state.ingest.instance_id, "pid": os.getpid()}


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Every worker's metrics, whichever worker answers (ingest/metrics.py)."""
    return Response(scrape(), media_type=CONTENT_TYPE_LATEST)
