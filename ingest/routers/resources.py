"""/admin/<resource>: list, get, create, replace, merge-patch and delete one item of a program
section (event types, rewards, campaigns, tiers, traits, audiences, journeys, webhooks,
destinations). Every write builds the whole resulting program and goes through the one write
path (ingest/program_writes.py): validated as PUT /admin/program, If-Match, one new version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response

from ingest.changes import SECRET_SECTIONS, mask_endpoint, merge_patch
from ingest.dependencies import Admin, IngestState
from ingest.errors import ApiError
from ingest.history import program_json
from ingest.models import DryRunResponse, ErrorResponse, VersionedList, VersionedResponse
from ingest.program_writes import (
    DryRun,
    base_program,
    check_patch_type,
    dry_run_answer,
    etag,
    if_match,
    object_body,
    write,
)
from ingest.routers.admin import ETAG_HEADER, PATCH_BODY, WRITE_ERRORS, WRITE_OPENAPI
from ingest.routers.common import ERRORS, NOT_FOUND, PathId, clean_admin_body
from schemas.program import RESERVED_EVENT_TYPES, Program


@dataclass(frozen=True)
class Resource:
    """A program section served as a collection: its URL name, where it sits in the program,
    the field that identifies an item, and its OpenAPI schema."""

    name: str
    section: tuple[str, ...]
    key: str
    schema: str

    def items(self, program: dict[str, Any]) -> list[dict[str, Any]]:
        node: Any = program
        for part in self.section:
            node = node[part]
        return node

    def find(self, program: dict[str, Any], item_id: str) -> int | None:
        return next((i for i, it in enumerate(self.items(program)) if it.get(self.key) == item_id), None)

    def show(self, item: dict[str, Any]) -> dict[str, Any]:
        return mask_endpoint(item) if self.section[0] in SECRET_SECTIONS else item


RESOURCES = (
    Resource("event-types", ("event_types",), "name", "EventType"),
    Resource("rewards", ("rewards",), "id", "Reward"),
    Resource("campaigns", ("campaigns",), "id", "Campaign"),
    Resource("tiers", ("tiers", "levels"), "id", "Tier"),
    Resource("traits", ("traits",), "name", "Trait"),
    Resource("audiences", ("audiences",), "id", "Audience"),
    Resource("journeys", ("journeys",), "id", "Journey"),
    Resource("webhooks", ("webhooks",), "id", "Webhook"),
    Resource("destinations", ("destinations",), "id", "Destination"),
)

router = APIRouter(prefix="/admin", tags=["admin resources"])
CONFLICT = {409: {"model": ErrorResponse, "description": "An item with this id exists (or is reserved)"}}
DRY_CREATE = {
    200: {"model": DryRunResponse, "description": "dry_run=true: what would be created (nothing is)"}
}
UNSUPPORTED = {415: {"model": ErrorResponse, "description": "Not a JSON (merge patch) body"}}
WITH_ETAG = {"headers": ETAG_HEADER}


def body_of(schema: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def located(res: Resource, program: dict[str, Any], item_id: str) -> int:
    index = res.find(program, item_id)
    if index is None:
        raise ApiError(404, f"no {res.name} item {item_id!r}")
    return index


def keyed(res: Resource, body: dict[str, Any], item_id: str) -> dict[str, Any]:
    """The item with its id; an id in the body must be the path's (rename = create + delete)."""
    if body.get(res.key, item_id) != item_id:
        reason = f"must be {item_id!r} (the path id)"
        raise ApiError(422, f"{res.key} cannot change", fields=[(res.key, reason)])
    return {**body, res.key: item_id}


async def save(
    state: IngestState, request: Request, response: Response, res: Resource,
    new: dict[str, Any], base: Program, expected: int | None, action: str, item_id: str, dry_run: bool,
) -> Any:  # fmt: skip
    """Publish the resulting program; answer with the stored item (defaults filled, masked).
    A dry run answers with the item as it would be stored and the change, publishing nothing."""
    resource = f"{res.name}/{item_id}"
    program, version = await write(state, request, new, base, expected, action, resource, dry_run)
    stored = program_json(program)
    index = res.find(stored, item_id)
    item = res.show(res.items(stored)[index]) if index is not None else {res.key: item_id, "deleted": True}
    if dry_run:
        return dry_run_answer({"data": item, "version": version}, base, program)
    response.headers["ETag"] = etag(version)
    if action == "create":
        response.headers["Location"] = f"/admin/{res.name}/{quote(item_id, safe='')}"
    return {"data": item, "version": version}


def add_routes(res: Resource) -> None:  # noqa: C901 - one closure per operation, all alike
    """The six operations of one resource."""
    collection, item_path = f"/{res.name}", f"/{res.name}/{{item_id}}"
    label = res.name.replace("-", " ")

    @router.get(collection, response_model=VersionedList, responses=ERRORS | {200: WITH_ETAG},
                name=f"list {label}", summary=f"List {label}")  # fmt: skip
    async def list_items(state: Admin, response: Response) -> dict:
        program = state.programs.current()
        response.headers["ETag"] = etag(program.version)
        return {"data": [res.show(i) for i in res.items(program_json(program))], "version": program.version}

    @router.get(item_path, response_model=VersionedResponse, responses=ERRORS | NOT_FOUND | {200: WITH_ETAG},
                name=f"get {label}", summary=f"Get one of the {label}")  # fmt: skip
    async def get_item(state: Admin, response: Response, item_id: PathId) -> dict:
        program = state.programs.current()
        current = program_json(program)
        item = res.items(current)[located(res, current, item_id)]
        response.headers["ETag"] = etag(program.version)
        return {"data": res.show(item), "version": program.version}

    @router.post(collection, status_code=201, response_model=VersionedResponse,
                 responses=WRITE_ERRORS | CONFLICT | {201: WITH_ETAG} | DRY_CREATE,
                 dependencies=[Depends(clean_admin_body)], name=f"create {label}",
                 summary=f"Create one of the {label}",
                 openapi_extra=body_of(res.schema) | WRITE_OPENAPI)  # fmt: skip
    async def create_item(state: Admin, request: Request, response: Response, dry_run: DryRun = False) -> Any:
        body = object_body(await request.body(), res.schema)
        item_id = body.get(res.key)
        if not isinstance(item_id, str) or not 0 < len(item_id) <= 256:
            reason = "required: a string of 1 to 256 characters (it is the item's path id)"
            raise ApiError(422, f"{res.key} is required", fields=[(res.key, reason)])
        expected = if_match(request)
        base = await base_program(state, expected)
        new = program_json(base)
        if res.find(new, item_id) is not None:
            raise ApiError(409, f"{res.name} item {item_id!r} exists: PUT or PATCH it", code="conflict")
        res.items(new).append(body)
        return await save(state, request, response, res, new, base, expected, "create", item_id, dry_run)

    @router.put(item_path, response_model=VersionedResponse,
                responses=WRITE_ERRORS | NOT_FOUND | {200: WITH_ETAG},
                dependencies=[Depends(clean_admin_body)], name=f"replace {label}",
                summary=f"Replace one of the {label}",
                openapi_extra=body_of(res.schema) | WRITE_OPENAPI)  # fmt: skip
    async def replace_item(
        state: Admin, request: Request, response: Response, item_id: PathId, dry_run: DryRun = False
    ) -> Any:
        body = keyed(res, object_body(await request.body(), res.schema), item_id)
        expected = if_match(request)
        base = await base_program(state, expected)
        new = program_json(base)
        res.items(new)[located(res, new, item_id)] = body
        return await save(state, request, response, res, new, base, expected, "replace", item_id, dry_run)

    @router.patch(item_path, response_model=VersionedResponse,
                  responses=WRITE_ERRORS | NOT_FOUND | UNSUPPORTED | {200: WITH_ETAG},
                  dependencies=[Depends(clean_admin_body)], name=f"patch {label}",
                  summary=f"Merge-patch one of the {label} (RFC 7386)",
                  openapi_extra={"requestBody": PATCH_BODY, **WRITE_OPENAPI})  # fmt: skip
    async def patch_item(
        state: Admin, request: Request, response: Response, item_id: PathId, dry_run: DryRun = False
    ) -> Any:
        check_patch_type(request)
        patch = object_body(await request.body(), "merge patch")
        expected = if_match(request)
        base = await base_program(state, expected)
        new = program_json(base)
        index = located(res, new, item_id)
        res.items(new)[index] = keyed(res, merge_patch(res.items(new)[index], patch), item_id)
        return await save(state, request, response, res, new, base, expected, "patch", item_id, dry_run)

    @router.delete(item_path, response_model=VersionedResponse,
                   responses=WRITE_ERRORS | NOT_FOUND | CONFLICT | {200: WITH_ETAG},
                   name=f"delete {label}", summary=f"Delete one of the {label}",
                   openapi_extra=WRITE_OPENAPI)  # fmt: skip
    async def delete_item(
        state: Admin, request: Request, response: Response, item_id: PathId, dry_run: DryRun = False
    ) -> Any:
        expected = if_match(request)
        base = await base_program(state, expected)
        new = program_json(base)
        index = located(res, new, item_id)
        if res.name == "event-types" and item_id in RESERVED_EVENT_TYPES:
            raise ApiError(409, f"{item_id} is a reserved event type and cannot be deleted", code="conflict")
        del res.items(new)[index]
        return await save(state, request, response, res, new, base, expected, "delete", item_id, dry_run)


for _resource in RESOURCES:
    add_routes(_resource)
