"""POST /admin/simulate: a program tried on events in memory, nothing published (admin scope)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from ingest.dependencies import Admin, IngestState
from ingest.errors import ApiError
from ingest.models import DataResponse
from ingest.program_writes import object_body
from ingest.routers.common import ERRORS, clean_admin_body
from ingest.routers.versions import history
from ingest.simulate import from_history, parse, proposed, simulate

router = APIRouter(prefix="/admin", tags=["admin simulate"])
SIMULATE_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SimulateIn"}}},
}


@router.post(
    "/simulate",
    response_model=DataResponse,
    responses=ERRORS,
    dependencies=[Depends(clean_admin_body)],
    openapi_extra={"requestBody": SIMULATE_BODY},
)
async def simulate_program(state: Admin, request: Request) -> dict:
    """Run events through the loyalty engine under a proposed program (`program`), a version
    from the history (`version`) or the current one: points, rules applied and skipped with
    reasons, tier changes and the webhooks that would be sent. Publishes and stores nothing."""
    body = parse(object_body(await request.body(), "simulation"))
    if body.program is not None:
        program, source = proposed(body.program), "proposed"
    elif body.version is not None:
        program, source = from_history(await _entry(state, body.version), body.version), "version"
    else:
        program, source = state.programs.current(), "current"
    return {"data": await run_in_threadpool(simulate, program, body, state.clock(), source)}


async def _entry(state: IngestState, version: int) -> dict:
    found = next((e for e in await history(state) if e["version"] == version), None)
    if found is None:
        raise ApiError(422, f"version {version} is not in the program history",
                       fields=[("version", "not in the program history")])  # fmt: skip
    return found
