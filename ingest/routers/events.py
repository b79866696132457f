"""/behavior/events: single and bulk events, commands on an event, and its status."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from ingest.dependencies import Ingest, IngestState
from ingest.dry_run import answer
from ingest.errors import ApiError, safe
from ingest.events import SCREENED, command, topic_for
from ingest.inputs import exact, suspect
from ingest.lookup import StoreUnavailable
from ingest.metrics import EVENTS, child
from ingest.models import (
    AcceptedResponse,
    BulkResponse,
    CommandIn,
    DataResponse,
    ErrorResponse,
    ProcessedResponse,
)
from ingest.routers.common import ERRORS, NOT_FOUND, PathId, Timeout, Wait, clean_body, read_json
from ingest.submit import masivo_fields, submit, unavailable, wait_timeout
from plumbing.producer import Delivered, Unavailable

router = APIRouter(prefix="/behavior/events", tags=["events"])
DRY_RUN = "Answer what the event would do to the customer now (asked of their partition); change nothing."
DryRunEvent = Annotated[bool, Query(description=DRY_RUN)]
EVENT_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventIn"}}},
}


@router.post(
    "",
    status_code=202,
    response_model=AcceptedResponse,
    responses={**ERRORS, 200: {"model": ProcessedResponse, "description": "Processed (wait=true), or "
                                "what the event would do (dry_run=true: `dry_run` true, nothing sent)"},
               504: {"model": ErrorResponse, "description": "dry_run=true: the loyalty processor did not "
                                                            "answer within the timeout"}},
    openapi_extra={"requestBody": EVENT_BODY},
)  # fmt: skip
async def post_event(
    request: Request,
    state: Ingest,
    wait: Wait = False,
    timeout: Timeout = None,
    dry_run: DryRunEvent = False,
) -> JSONResponse:
    """Enqueue one event; 202 once Kafka acknowledged it (or 200 with the result if wait=true).
    With dry_run=true: 200 with what the event would do to the customer as the partition that
    owns them holds them now; nothing is changed or sent but the question (ingest/dry_run.py).

    The body is parsed here (orjson + EventIn) rather than by the framework: same rules,
    a fraction of the per-request cost on the hottest endpoint. Without query parameters the
    request does not even get here: ingest/fastpath.py answers it (event_record, enqueue)."""
    if dry_run:
        return await dry_run_event(request, state, timeout)
    return await accept_event(request, state, wait, timeout)


async def dry_run_event(request: Request, state: IngestState, timeout: float | None) -> JSONResponse:
    """Validate as the real request is (the same 422s), then ask the customer's partition."""
    raw = await request.body()
    record = state.builder.event(read_json(raw), state.clock(), exact(raw) if suspect(raw) else SCREENED)
    state.builder.encode(record)  # text Avro cannot carry is the same 422 as a real send
    seconds = wait_timeout(state, timeout)
    reply = None
    if record["path"] == "loyalty":  # a tracking event never reaches the loyalty processor
        try:  # the listener cannot start or Kafka does not take the command: 503
            reply = await state.dry_runs.ask(state.producer, state.builder.encode, record, seconds)
        except Unavailable as exc:
            raise unavailable(state, str(exc)) from None
    body = {"data": answer(record, reply), "dry_run": True, "message": "Dry run: nothing was changed or sent"}
    return JSONResponse(body)


async def accept_event(
    request: Request, state: IngestState, wait: bool = False, timeout: float | None = None
) -> JSONResponse:
    """POST /behavior/events once authenticated: parse, build, produce, answer."""
    return await submit(state, event_record(state, await request.body()), wait, timeout)


def event_record(state: IngestState, raw: bytes) -> dict[str, Any]:
    """The Event record of a single-event body, or the ApiError (400, 422) naming the field."""
    try:
        return state.builder.event(read_json(raw), state.clock(), exact(raw) if suspect(raw) else SCREENED)
    except ApiError:
        child(EVENTS, "rejected", "unknown").inc()
        raise


BULK_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["events"],
                "additionalProperties": False,
                "properties": {
                    "events": {
                        "type": "array",
                        "maxItems": 1000,
                        # Any item is taken: each is validated as an EventIn on its own and a bad
                        # one is `rejected` in the 200 answer, never a 4xx for the request.
                        "items": {},
                        "description": "Events (EventIn), each validated on its own: an invalid "
                        "item is rejected in the answer while the others are accepted.",
                    }
                },
            }
        }
    },
}


@router.post(
    "/bulk",
    response_model=BulkResponse,
    responses=ERRORS,
    openapi_extra={"requestBody": BULK_BODY},
)
async def post_bulk(request: Request, state: Ingest) -> Response:
    """Enqueue up to 1000 events; each item is accepted or rejected on its own."""
    raw = await request.body()
    events = _bulk_events(raw, state.config.max_bulk_events)
    exact_events = _exact_events(raw) if suspect(raw) else None
    items, messages, indexes = _prepare(state, events, exact_events)
    outcomes = await state.producer.send_many(messages)
    for index, outcome in zip(indexes, outcomes, strict=True):
        if not isinstance(outcome, Delivered):
            items[index] = _rejected(index, [("queue", str(outcome))], code="unavailable")
    accepted = sum(1 for item in items if item["status"] == "accepted")
    EVENTS.labels("accepted", "bulk").inc(accepted)
    EVENTS.labels("rejected", "bulk").inc(len(items) - accepted)
    if messages and accepted == 0 and len(messages) == len(events):
        raise unavailable(state, "Kafka did not acknowledge the batch in time")
    body = {"data": items, "accepted": accepted, "rejected": len(items) - accepted}
    return Response(orjson.dumps(body), media_type="application/json")


def _bulk_events(raw: bytes, limit: int) -> list[Any]:
    """Parse the bulk body with orjson (several times faster than the framework's path)."""
    body = read_json(raw)
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise ApiError(422, 'body must be {"events": [...]}', fields=[("events", "required list")])
    extra = sorted(set(body) - {"events"})
    if extra:
        raise ApiError(422, "unexpected fields", fields=[(k, "extra field not permitted") for k in extra])
    if len(body["events"]) > limit:
        raise ApiError(
            422,
            f"too many events: {len(body['events'])} > {limit} per request",
            code="too_many_events",
            fields=[("events", f"at most {limit} items")],
        )
    return body["events"]


def _exact_events(raw: bytes) -> list[Any] | None:
    """The items parsed exactly, for the control-character and integer-range walk."""
    body = exact(raw)
    return body.get("events") if isinstance(body, dict) else None


def _prepare(
    state: IngestState, raw_events: list[dict[str, Any]], exact_events: list[Any] | None = None
) -> tuple[list[dict[str, Any]], list[tuple[str, str, bytes]], list[int]]:
    now = state.clock()
    items: list[dict[str, Any]] = []
    messages: list[tuple[str, str, bytes]] = []
    indexes: list[int] = []
    builder = state.builder
    for index, raw in enumerate(raw_events):
        try:
            record = builder.event(raw, now, SCREENED if exact_events is None else exact_events[index])
            value = builder.encode(record)
        except ApiError as exc:
            items.append(_rejected(index, exc.fields or [("body", exc.message)]))
            continue
        items.append({"index": index, "status": "accepted", "id": record["id"], "errors": []})
        messages.append((topic_for(record), record["customer_id"], value))
        indexes.append(index)
    return items, messages, indexes


def _rejected(index: int, fields: list[tuple[str, str]], code: str = "invalid") -> dict[str, Any]:
    return {
        "index": index,
        "status": "rejected",
        "id": None,
        "errors": [{"path": safe(p), "reason": safe(r), "code": code} for p, r in fields],
    }


@router.get("/{event_id}", response_model=DataResponse, responses={**ERRORS, **NOT_FOUND})
async def get_event(event_id: PathId, state: Ingest) -> dict:
    """Status and result of a processed event, read from the sink's events table, with
    Masivo's reply fields (the time of every transition so far and rewarding_campaigns)."""
    row = await _find(state, event_id)
    result = row.get("result") if isinstance(row.get("result"), dict) else {}
    times = result.get("times")  # every transition's time, kept by the processor
    fields = masivo_fields(row.get("status"), row.get("processed_at"), result.get("rules_applied"), times)
    # Masivo's event fields; the sink keeps neither `reserve` nor the queue message
    masivo = {"data": row.get("properties") or {}, "reserve": None, "queue_message_id": None,
              "issued_at": None}  # fmt: skip
    return {"data": {**masivo, **row, "fulfilled": row.get("fulfilled") is not False, **fields}}


async def _find(state: IngestState, event_id: str) -> dict[str, Any]:
    try:
        row = await state.lookup.event(event_id)
    except StoreUnavailable:
        raise unavailable(state, "event store unavailable") from None
    if row is None:
        raise ApiError(404, f"event {event_id!r} not found (it may still be in flight)")
    return row


async def _command(
    state: IngestState,
    kind: str,
    event_id: str,
    body: CommandIn | None,
    wait: bool,
    timeout: float | None,
) -> JSONResponse:
    body = body or CommandIn()
    event_type = kind
    customer_id = body.customer_id
    if customer_id is None:
        row = await _find(state, event_id)
        customer_id, event_type = row["customer_id"], row.get("type") or kind
    payload = {"reason": body.reason} if body.reason is not None else {}
    record = command(kind, customer_id, event_type, payload, state.clock(), event_id)
    return await submit(state, record, wait, timeout)


COMMAND_RESPONSES = {**ERRORS, **NOT_FOUND, 200: {"model": ProcessedResponse}}
CLEAN = [Depends(clean_body)]


@router.patch(
    "/{event_id}/fulfill",
    status_code=202,
    response_model=AcceptedResponse,
    responses=COMMAND_RESPONSES,
    dependencies=CLEAN,
)
async def fulfill(
    state: Ingest,
    event_id: PathId,
    body: Annotated[CommandIn | None, Body()] = None,
    wait: Wait = False,
    timeout: Timeout = None,
) -> JSONResponse:
    """Fulfil a reservation (an event sent with fulfilled=false)."""
    return await _command(state, "FULFILL", event_id, body, wait, timeout)


@router.post(
    "/{event_id}/cancel",
    status_code=202,
    response_model=AcceptedResponse,
    responses=COMMAND_RESPONSES,
    dependencies=CLEAN,
)
async def cancel(
    state: Ingest,
    event_id: PathId,
    body: Annotated[CommandIn | None, Body()] = None,
    wait: Wait = False,
    timeout: Timeout = None,
) -> JSONResponse:
    """Cancel a pending reservation."""
    return await _command(state, "CANCEL", event_id, body, wait, timeout)


@router.post(
    "/{event_id}/reverse",
    status_code=202,
    response_model=AcceptedResponse,
    responses=COMMAND_RESPONSES,
    dependencies=CLEAN,
)
async def reverse(
    state: Ingest,
    event_id: PathId,
    body: Annotated[CommandIn | None, Body()] = None,
    wait: Wait = False,
    timeout: Timeout = None,
) -> JSONResponse:
    """Reverse a resolved event (its points are taken back, its redemptions restored); an
    unfulfilled one (an open reservation) is cancelled instead: CANCELLED, nothing granted,
    its reserved rewards released (Masivo's behaviour)."""
    return await _command(state, "REVERSE", event_id, body, wait, timeout)
