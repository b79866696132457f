"""/admin/program: read, replace (PUT) and merge-patch (PATCH) the whole program; admin scope.

PUT replaces the whole program, so its body must name every section (an empty list is fine):
a partial body would silently drop the sections it leaves out (campaigns, webhooks, ...).
PATCH (RFC 7386) merges a partial body into the current program instead. Both need If-Match
(the ETag of a GET) and answer with the new version; secrets are masked in every answer.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from ingest.changes import mask, merge_patch
from ingest.dependencies import Admin
from ingest.errors import ApiError
from ingest.history import program_json
from ingest.models import DataResponse, ErrorResponse
from ingest.program_writes import (
    MERGE_PATCH,
    DryRun,
    base_program,
    check_patch_type,
    dry_run_answer,
    etag,
    if_match,
    object_body,
    write,
)
from ingest.routers.common import ERRORS, clean_admin_body
from schemas.program import Program

router = APIRouter(prefix="/admin", tags=["admin"])

WRITE_ERRORS = {
    **ERRORS,
    412: {"model": ErrorResponse, "description": "If-Match names an older version (see ETag)"},
    428: {"model": ErrorResponse, "description": "If-Match missing"},
}
IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": True,
    "schema": {"type": "string"},
    "description": 'The ETag of your last GET ("<version>"), or * for whatever is current.',
}
ETAG_HEADER = {"ETag": {"description": 'the program version, "<version>"', "schema": {"type": "string"}}}


def masked_program(program: Program) -> dict[str, Any]:
    """What the admin API shows of a program: everything but its secrets."""
    return mask(program.model_dump(mode="json", by_alias=True))


@router.get("/program", response_model=DataResponse, responses=ERRORS)
async def get_program(state: Admin, response: Response) -> dict:
    """The program version this instance currently uses (secrets masked); ETag = its version."""
    program = state.programs.current()
    response.headers["ETag"] = etag(program.version)
    return {"data": masked_program(program)}


# The sections that hold what a program manager defined: a PUT without one of them would wipe
# it silently, so each must be sent (an empty list says "none"). Settings with defaults (name,
# rounding, rfm, delivery, retention, fulfilment; `version` is assigned when publishing) may be
# left out, so adding such a setting later does not break every client's PUT.
OPTIONAL_SECTIONS = frozenset({"version", "name", "rounding", "rfm", "delivery", "retention", "fulfilment"})
REQUIRED_SECTIONS = tuple(
    field.alias or name for name, field in Program.model_fields.items() if name not in OPTIONAL_SECTIONS
)


def missing_sections(body: dict[str, Any]) -> list[tuple[str, str]]:
    """Top-level program keys absent from a PUT body, as (path, reason)."""
    return [(key, "required: PUT replaces the whole program") for key in REQUIRED_SECTIONS if key not in body]


def program_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The PUT body's JSON Schema (schemas/program.py, every section required) and its $defs,
    for /openapi.json."""
    schema = Program.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    schema["required"] = list(REQUIRED_SECTIONS)
    schema["description"] = "A full program: every section (PUT replaces the whole program)."
    return schema, defs


PROGRAM_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Program"}}},
}
PATCH_BODY = {
    "required": True,
    "content": {
        kind: {"schema": {"type": "object", "description": "RFC 7386 merge patch"}}
        for kind in (MERGE_PATCH, "application/json")
    },
}
WRITE_OPENAPI = {"parameters": [IF_MATCH]}


def written(response: Response, program: Program, version: int, base: Program, dry_run: bool) -> Any:
    answer = {"data": masked_program(program.model_copy(update={"version": version}))}
    if dry_run:
        return dry_run_answer({**answer, "version": version}, base, program)
    response.headers["ETag"] = etag(version)
    return answer


@router.put(
    "/program",
    response_model=DataResponse,
    responses=WRITE_ERRORS | {200: {"headers": ETAG_HEADER}},
    dependencies=[Depends(clean_admin_body)],
    openapi_extra={"requestBody": PROGRAM_BODY, **WRITE_OPENAPI},
)
async def put_program(state: Admin, request: Request, response: Response, dry_run: DryRun = False) -> Any:
    """Replace the whole program (every section) and publish it as the next version."""
    body = object_body(await request.body(), "program")
    if missing := missing_sections(body):
        names = ", ".join(path for path, _ in missing)
        raise ApiError(422, f"incomplete program: missing {names} (PUT replaces the whole program)",
                       fields=missing)  # fmt: skip
    expected = if_match(request)
    base = await base_program(state, expected)
    program, version = await write(
        state, request, body, base, expected, "program.replace", "program", dry_run
    )
    return written(response, program, version, base, dry_run)


@router.patch(
    "/program",
    response_model=DataResponse,
    responses=WRITE_ERRORS | {200: {"headers": ETAG_HEADER}},
    dependencies=[Depends(clean_admin_body)],
    openapi_extra={"requestBody": PATCH_BODY, **WRITE_OPENAPI},
)
async def patch_program(state: Admin, request: Request, response: Response, dry_run: DryRun = False) -> Any:
    """Merge a partial program (RFC 7386: objects merge, null removes, lists are replaced)."""
    check_patch_type(request)
    patch = object_body(await request.body(), "merge patch")
    expected = if_match(request)
    base = await base_program(state, expected)
    merged = merge_patch(program_json(base), patch)
    program, version = await write(
        state, request, merged, base, expected, "program.patch", "program", dry_run
    )
    return written(response, program, version, base, dry_run)
