"""The one write path of the admin API: every change (a resource, the whole program, a rollback)
becomes a full program that is validated like PUT /admin/program, checked against If-Match and
published as one new version by compare-and-set (plumbing/config_table.py).

Order of checks (RFC 9110 13.2.2: preconditions are evaluated only when the request would
otherwise succeed): body 400/422, If-Match missing 428, unknown id 404, existing id 409,
invalid resulting program 422, stale If-Match 412; the publish itself answers 412 when another
writer committed between our read and our commit.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ingest.changes import masked_diff, restore_secrets, summary
from ingest.dependencies import IngestState
from ingest.errors import ApiError, validation_fields
from ingest.history import Change, program_json
from ingest.programs import schema_problems
from ingest.routers.common import read_json
from ingest.submit import unavailable
from plumbing.config_table import VersionConflict
from processors.loyalty.validate import rule_errors
from schemas.program import Program

MERGE_PATCH = "application/merge-patch+json"
# ?dry_run=true on every program write: validated and checked (If-Match included) as the write
# would be, answered with what it would change; nothing is published, versioned or audited.
DryRun = Annotated[bool, Query(description="Validate and show what would change (the diff and the "
                                           "version it would become); publish nothing.")]  # fmt: skip
ANY = None  # If-Match: * (any current version)


def etag(version: int) -> str:
    return f'"{version}"'


def if_match(request: Request) -> int | None:
    """The version named by If-Match (strong or weak tag), ANY for `*`; 428 without it."""
    raw = request.headers.get("if-match")
    if raw is None:
        raise ApiError(428, 'If-Match is required on writes: send the ETag of your GET (e.g. "7") or *',
                       code="precondition_required")  # fmt: skip
    raw = raw.strip()
    if raw == "*":
        return ANY
    tag = raw.removeprefix("W/")
    if len(tag) < 3 or tag[0] != '"' or tag[-1] != '"' or not tag[1:-1].isdigit() or len(tag) > 21:
        raise ApiError(400, 'If-Match must be a version ETag such as "7", or *', code="bad_if_match",
                       fields=[("If-Match", 'expected "<version>" or *')])  # fmt: skip
    return int(tag[1:-1])


async def base_program(state: IngestState, expected: int | None) -> Program:
    """The program a change is made against; waits briefly when the client has seen a newer
    version than this instance's table (another ingest instance published it)."""
    program = state.programs.current()
    if expected is not None and expected > program.version:
        program = await seen_here(state, expected)
    return program


async def seen_here(state: IngestState, version: int, timeout_s: float = 2.0) -> Program:
    """This instance's program once its table holds `version` (or after `timeout_s`: the
    program as it is then). The table reads program.config in the background, a few ms
    behind a publish."""
    wait = getattr(state.programs, "wait_for_version", None)
    if callable(wait):
        try:
            return await run_in_threadpool(wait, version, timeout_s)
        except TimeoutError:
            pass
    return state.programs.current()


def object_body(raw: bytes, what: str = "body") -> dict[str, Any]:
    body = read_json(raw)
    if not isinstance(body, dict):
        raise ApiError(422, f"the {what} must be a JSON object", fields=[("body", "must be an object")])
    return body


def check_patch_type(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in (MERGE_PATCH, "application/json"):
        raise ApiError(415, f"PATCH takes {MERGE_PATCH} (or application/json), not {kind or 'nothing'}")


def validate(body: dict[str, Any]) -> Program:
    """schemas.program.Program (strict), event type JSON Schemas and CEL rules; 422 naming fields."""
    body = {k: v for k, v in body.items() if k != "version"}  # assigned when publishing
    try:
        program = Program.model_validate(body, strict=True)
    except ValidationError as exc:
        raise ApiError(422, "invalid program", fields=validation_fields(exc.errors())) from None
    if problems := schema_problems(program):
        raise ApiError(422, "invalid event type schema", fields=problems)
    if errors := rule_errors(program):
        raise ApiError(422, "invalid rules", fields=[("program", e) for e in errors])
    return program


def with_secrets(new: dict[str, Any], base: Program) -> dict[str, Any]:
    """Secrets left out or sent masked keep their stored values (GET-edit-PUT is safe)."""
    if problems := restore_secrets(new, program_json(base)):
        raise ApiError(422, "a masked secret has no stored value", fields=problems)
    return new


def precondition(base: Program, expected: int | None) -> None:
    if expected is not ANY and expected != base.version:
        raise stale(expected, base.version)


def stale(expected: int | None, current: int) -> ApiError:
    return ApiError(412, f"the program is at version {current}, not {expected}: GET it again and retry",
                    code="precondition_failed", headers={"ETag": etag(current)})  # fmt: skip


async def publish(
    state: IngestState, request: Request, program: Program, base: Program, action: str, resource: str
) -> int:
    """Publish `program` as the version after `base` (compare-and-set), recording who and what."""
    actor = getattr(request.state, "actor", "unknown")
    change = Change(actor=actor, action=action, resource=resource, expected=base.version)
    try:
        version = await run_in_threadpool(state.publisher, program, change)
    except VersionConflict as exc:
        raise stale(exc.expected, exc.current) from None
    except Exception as exc:  # Kafka errors of any kind: the client may retry
        raise unavailable(state, f"could not publish the program: {exc}") from None
    await seen_here(state, version)  # read-your-writes: the next request here starts from it
    return version


async def write(
    state: IngestState, request: Request, new: dict[str, Any], base: Program, expected: int | None,
    action: str, resource: str, dry_run: bool = False,
) -> tuple[Program, int]:  # fmt: skip
    """Restore secrets, validate, check If-Match, publish: the validated program and its version.
    A dry run stops before publishing and answers with the version the write would become."""
    program = validate(with_secrets(new, base))
    precondition(base, expected)
    if dry_run:
        return program, base.version + 1
    version = await publish(state, request, program, base, action, resource)
    return program, version


def dry_run_answer(answer: dict[str, Any], base: Program, program: Program) -> JSONResponse:
    """What a dry run shows: the answer the write would give (`version` = the version it would
    become), the version it was checked against, and the change (secrets masked). The ETag
    stays the current version: nothing was published."""
    changes = masked_diff(program_json(base), program_json(program))
    body = {**answer, "dry_run": True, "version_before": base.version, "summary": summary(changes),
            "changes": changes}  # fmt: skip
    return JSONResponse(body, headers={"ETag": etag(base.version)})
