"""The hot path shared by every write endpoint: encode, produce, await the ack, optionally
await the processor's result (?wait=true), and shape the answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi.responses import JSONResponse

from ingest.dependencies import IngestState
from ingest.errors import ApiError
from ingest.events import topic_for
from ingest.metrics import EVENTS, SYNC_WAITS, child
from plumbing.producer import Delivered, Unavailable
from schemas import event_times
from schemas.wallet import as_json as wallet_json


def unavailable(state: IngestState, message: str) -> ApiError:
    return ApiError(503, message, headers={"Retry-After": str(state.config.retry_after_s)})


def wait_timeout(state: IngestState, timeout: float | None) -> float:
    if timeout is None:
        return state.config.wait_timeout_s
    if not 0 < timeout <= state.config.max_wait_timeout_s:
        raise ApiError(
            422,
            "bad timeout",
            fields=[("timeout", f"must be in (0, {state.config.max_wait_timeout_s:g}] seconds")],
        )
    return timeout


async def submit(
    state: IngestState, record: dict[str, Any], wait: bool = False, timeout: float | None = None
) -> JSONResponse:
    """Produce one record; 202 after the ack, or 200 with the result when waiting succeeds."""
    wait = wait and record["path"] == "loyalty"  # tracking events never get a loyalty result
    if not wait:
        return JSONResponse(accepted_body(await enqueue(state, record)), status_code=202)
    seconds = wait_timeout(state, timeout)
    if state.results is not None:
        try:
            await state.results.started("the results")  # before the event: its result comes later
        except Unavailable as exc:
            raise unavailable(state, str(exc)) from None
    record["reply_to"] = state.instance_id
    value = state.builder.encode(record)
    future = state.hub.register(record["id"])
    try:
        accepted = await _produce(state, record, value)
    except ApiError:
        state.hub.forget(record["id"], future)
        raise
    result = await state.hub.wait(future, record["id"], seconds)
    child(SYNC_WAITS, "result" if result else "timeout").inc()
    if result is not None:
        return JSONResponse({"data": processed_data(result, accepted), "message": "Event processed"})
    return JSONResponse(accepted_body(accepted), status_code=202)


async def enqueue(state: IngestState, record: dict[str, Any]) -> dict[str, Any]:
    """Encode and produce one record without waiting for its result: the 202's `data`."""
    return await _produce(state, record, state.builder.encode(record))


async def _produce(state: IngestState, record: dict[str, Any], value: bytes) -> dict[str, Any]:
    try:
        delivered = await state.producer.send(topic_for(record), record["customer_id"], value)
    except Unavailable as exc:
        child(EVENTS, "unavailable", record["path"]).inc()
        raise unavailable(state, str(exc)) from None
    child(EVENTS, "accepted", record["path"]).inc()
    return accepted_data(record, delivered)


def accepted_body(accepted: dict[str, Any]) -> dict[str, Any]:
    """The 202 answer around `accepted_data`."""
    return {"data": accepted, "message": "Event enqueued for processing"}


def accepted_data(record: dict[str, Any], delivered: Delivered) -> dict[str, Any]:
    return {
        "id": record["id"],
        "customer_id": record["customer_id"],
        "type": record["type"],
        "kind": record["kind"],
        "reference": record["reference"],
        "status": "PENDING",
        "queue": {
            "topic": delivered.topic,
            "partition": delivered.partition,
            "offset": delivered.offset,
        },
    }


# The event echo is what was sent; everything else the processor put in `detail` is the result.
NOT_ECHOED = frozenset({"event", "times"})  # times: shown as Masivo's *_at fields


def processed_data(result: dict[str, Any], accepted: dict[str, Any]) -> dict[str, Any]:
    """Flatten a loyalty Result (its `detail` JSON and its `wallet` record, in the wallet's
    JSON view) into the synchronous answer.

    Every detail key but the event echo is passed through (rules_skipped with punch-card
    progress, expires_at, reversals, ...), so the answer carries what GET /behavior/events/{id}
    later shows as `result`."""
    try:
        detail = orjson.loads(result.get("detail") or "{}")
    except orjson.JSONDecodeError:
        detail = {}
    if not isinstance(detail, dict):
        detail = {}
    shown = {
        **accepted,
        **{k: v for k, v in detail.items() if k not in NOT_ECHOED},
        "status": result["status"],
        "reason": result.get("reason"),
        "points": result.get("points", 0.0),
        "rules_applied": detail.get("rules_applied", []),
        "rules_skipped": detail.get("rules_skipped", []),
        "accumulations": detail.get("accumulations", []),
        "redemptions": detail.get("redemptions", []),
        "wallet": wallet_json(result.get("wallet")),
        "tier": detail.get("tier"),
        "duplicate": bool(detail.get("duplicate", False)),
        "config_version": result.get("config_version", 0),
        "processed_at": result.get("processed_at"),
        **masivo_fields(result["status"], result.get("processed_at"), detail.get("rules_applied"),
                        detail.get("times")),  # fmt: skip
        **masivo_event(detail.get("event"), accepted),
    }
    # Masivo's `result` nesting of what the event did (the same values as the flat fields)
    shown["result"] = {k: shown[k] for k in ("wallet", "accumulations", "redemptions")}
    return shown


def masivo_event(event: Any, accepted: dict[str, Any]) -> dict[str, Any]:
    """Masivo's event fields of a reply: `event_id` (the event the result is about: a command's
    target), `issued_at`, `fulfilled`, `reserve`, `data` (its properties) and
    `queue_message_id` (topic/partition/offset of what was enqueued)."""
    ev = event if isinstance(event, dict) else {}
    queue = accepted.get("queue") or {}
    props = ev.get("properties")
    if isinstance(props, str):
        try:
            props = orjson.loads(props)
        except orjson.JSONDecodeError:
            props = None
    return {
        "event_id": ev.get("id") or accepted["id"],
        "issued_at": iso_ms(ev.get("issued_at")),
        "fulfilled": ev.get("fulfilled", True),
        "reserve": ev.get("reserve"),
        "data": props if isinstance(props, dict) else {},
        "queue_message_id": f"{queue.get('topic')}/{queue.get('partition')}/{queue.get('offset')}",
    }


def masivo_fields(status: str | None, processed_at: Any, applied: Any, times: Any = None) -> dict[str, Any]:
    """Masivo's reply fields: processing_at, resolved_at, cancelled_at, expired_at, reversed_at
    (ISO 8601 or null) and rewarding_campaigns (the campaign ids that rewarded the event).
    `times`: every transition's time (ISO 8601, or epoch ms as a result's detail has them);
    without it they follow from the status and processed_at (schemas/event_times.py)."""
    shown = event_times.of(status, processed_at, times)
    shown = {k: iso_ms(v) if isinstance(v, int | float) else v for k, v in shown.items()}
    ids = [a.get("campaign_id") if isinstance(a, dict) else a for a in applied or ()]
    return {**shown, "rewarding_campaigns": [i for i in ids if isinstance(i, str)]}


def iso_ms(ms: Any) -> str | None:
    """Epoch ms as ISO 8601 UTC (the format GET /behavior/events/{id} reads from the sink)."""
    if isinstance(ms, bool) or not isinstance(ms, int | float):
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()
