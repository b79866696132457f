"""/admin/program/versions, diffs and rollback, read from `program.history` (ingest/history.py);
and /admin/audit, read from the sink's `admin_audit` table (ingest/audit.py). Admin scope.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ingest.audit import AuditQuery
from ingest.changes import masked_diff
from ingest.dependencies import Admin, IngestState
from ingest.errors import ApiError, validation_fields
from ingest.lookup import StoreUnavailable
from ingest.models import AuditPage, DataResponse, ListResponse, RollbackIn
from ingest.program_writes import DryRun, base_program, dry_run_answer, etag, if_match, object_body, write
from ingest.routers.admin import ETAG_HEADER, WRITE_ERRORS, WRITE_OPENAPI
from ingest.routers.common import ERRORS, NOT_FOUND, clean_admin_body, instant, iso_time
from ingest.submit import unavailable

router = APIRouter(prefix="/admin", tags=["admin versions and audit"])
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]
Text = Annotated[str | None, Query(max_length=256, pattern=r"^[^\x00-\x1f]*$")]


async def history(state: IngestState) -> list[dict[str, Any]]:
    try:
        return await run_in_threadpool(state.history.versions)
    except Exception as exc:  # Kafka unreachable or slow: the client may retry
        raise unavailable(state, f"program history unavailable: {exc}") from None


def at_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def listed(entry: dict[str, Any]) -> dict[str, Any]:
    keys = ("version", "actor", "action", "resource", "version_before", "summary")
    return {**{k: entry.get(k) for k in keys}, "at": at_iso(entry["at"])}


async def version_entry(state: IngestState, version: int) -> dict[str, Any]:
    found = next((e for e in await history(state) if e["version"] == version), None)
    if found is None:
        raise ApiError(404, f"version {version} is not in the program history")
    return found


@router.get("/program/versions", response_model=ListResponse, responses=ERRORS)
async def list_versions(state: Admin) -> dict:
    """Every published version, newest first: who (API key name), when, what changed."""
    return {"data": [listed(e) for e in reversed(await history(state))]}


@router.get("/program/versions/{version}", response_model=DataResponse, responses=ERRORS | NOT_FOUND)
async def get_version(state: Admin, version: Version) -> dict:
    """That version's program (secrets masked: history never stores them)."""
    entry = await version_entry(state, version)
    return {"data": {**entry["program"], "version": version}}


@router.get("/program/versions/{version}/diff/{other}", response_model=DataResponse,
            responses=ERRORS | NOT_FOUND)  # fmt: skip
async def diff_versions(state: Admin, version: Version, other: Version) -> dict:
    """The changed paths from `version` to `other`, with before/after (secrets masked)."""
    before, after = await version_entry(state, version), await version_entry(state, other)
    changes = masked_diff(before["program"], after["program"])
    return {"data": {"from": version, "to": other, "changes": changes}}


ROLLBACK_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RollbackIn"}}},
}


@router.post(
    "/program/rollback",
    response_model=DataResponse,
    responses=WRITE_ERRORS | NOT_FOUND | {200: {"headers": ETAG_HEADER}},
    dependencies=[Depends(clean_admin_body)],
    openapi_extra={"requestBody": ROLLBACK_BODY, **WRITE_OPENAPI},
)
async def rollback(state: Admin, request: Request, response: Response, dry_run: DryRun = False) -> Any:
    """Publish a NEW version whose content is that of `version`; current secrets are kept for
    endpoints that still exist (history holds them masked)."""
    try:
        body = RollbackIn.model_validate(object_body(await request.body()))
    except ValidationError as exc:
        raise ApiError(422, "invalid rollback", fields=validation_fields(exc.errors())) from None
    expected = if_match(request)
    entry = await version_entry(state, body.version)
    base = await base_program(state, expected)
    resource = f"program/versions/{body.version}"
    program, version = await write(state, request, dict(entry["program"]), base, expected, "rollback",
                                   resource, dry_run)  # fmt: skip
    answer = {"data": {"version": version, "rolled_back_to": body.version}}
    if dry_run:
        return dry_run_answer({**answer, "version": version}, base, program)
    response.headers["ETag"] = etag(version)
    return answer


@router.get("/audit", response_model=AuditPage, responses=ERRORS)
async def audit_log(
    state: Admin,
    since: Annotated[str | None, iso_time("entries at or after (ISO 8601)")] = None,
    until: Annotated[str | None, iso_time("entries before (ISO 8601)")] = None,
    actor: Text = None,
    resource: Annotated[
        str | None,
        Query(
            max_length=256, pattern=r"^[^\x00-\x1f]*$", description="program, campaigns, campaigns/spend ..."
        ),
    ] = None,
    action: Text = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict:
    """Every admin write, newest first: who, when, what (a diff with secrets masked)."""
    window = instant("since", since), instant("until", until)
    query = AuditQuery(*window, actor, resource, action, limit, offset)
    try:
        rows = await state.audit.entries(query)
    except StoreUnavailable as exc:
        raise unavailable(state, f"audit log unavailable: {exc}") from None
    following = offset + limit if len(rows) == limit else None
    return {"data": rows, "limit": limit, "offset": offset, "next_offset": following}
