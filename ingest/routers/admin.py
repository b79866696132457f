"""/admin/program: read and publish the program (event types, campaigns, ...); admin scope.

PUT replaces the whole program, so its body must name every section (an empty list is fine):
a partial body would silently drop the sections it leaves out (campaigns, webhooks, ...).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ingest.dependencies import Admin
from ingest.errors import ApiError, validation_fields
from ingest.models import DataResponse
from ingest.programs import schema_problems
from ingest.routers.common import ERRORS, clean_admin_body, read_json
from ingest.submit import unavailable
from processors.loyalty.validate import rule_errors
from schemas.program import Program

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/program", response_model=DataResponse, responses=ERRORS)
async def get_program(state: Admin) -> dict:
    """The program version this instance currently uses."""
    return {"data": state.programs.current().model_dump(mode="json", by_alias=True)}


# The sections that hold what a program manager defined: a PUT without one of them would wipe
# it silently, so each must be sent (an empty list says "none"). Settings with defaults (name,
# rounding, rfm, delivery, retention; `version` is assigned when publishing) may be left out,
# so adding such a setting later does not break every client's PUT.
OPTIONAL_SECTIONS = frozenset({"version", "name", "rounding", "rfm", "delivery", "retention"})
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


@router.put(
    "/program",
    response_model=DataResponse,
    responses=ERRORS,
    dependencies=[Depends(clean_admin_body)],
    openapi_extra={"requestBody": PROGRAM_BODY},
)
async def put_program(state: Admin, request: Request) -> dict:
    """Validate and publish a program; processors and ingest hot-swap to the new version."""
    body = read_json(await request.body())
    if not isinstance(body, dict):
        raise ApiError(422, "a program is a JSON object", fields=[("body", "must be an object")])
    if missing := missing_sections(body):
        names = ", ".join(path for path, _ in missing)
        raise ApiError(422, f"incomplete program: missing {names} (PUT replaces the whole program)",
                       fields=missing)  # fmt: skip
    try:
        program = Program.model_validate(body, strict=True)
    except ValidationError as exc:
        raise ApiError(422, "invalid program", fields=validation_fields(exc.errors())) from None
    problems = schema_problems(program)
    if problems:
        raise ApiError(422, "invalid event type schema", fields=problems)
    if errors := rule_errors(program):
        raise ApiError(422, "invalid rules", fields=[("program", e) for e in errors])
    try:
        version = await run_in_threadpool(state.publisher, program)
    except Exception as exc:  # Kafka errors of any kind: the client may retry
        raise unavailable(state, f"could not publish the program: {exc}") from None
    return {"data": {"version": version}}
