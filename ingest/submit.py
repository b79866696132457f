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
from ingest.metrics import EVENTS, SYNC_WAITS
from ingest.producer import Delivered, Unavailable
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
    seconds = wait_timeout(state, timeout) if wait else 0.0
    if wait:
        record["reply_to"] = state.instance_id
    value = state.builder.encode(record)
    future = state.hub.register(record["id"]) if wait else None
    try:
        delivered = await state.producer.send(topic_for(record), record["customer_id"], value)
    except Unavailable as exc:
        if future is not None:
            state.hub.forget(record["id"], future)
        EVENTS.labels("unavailable", record["path"]).inc()
        raise unavailable(state, str(exc)) from None
    EVENTS.labels("accepted", record["path"]).inc()
    accepted = accepted_data(record, delivered)
    if future is not None:
        result = await state.hub.wait(future, record["id"], seconds)
        SYNC_WAITS.labels("result" if result else "timeout").inc()
        if result is not None:
            return JSONResponse({"data": processed_data(result, accepted), "message": "Event processed"})
    return JSONResponse({"data": accepted, "message": "Event enqueued for processing"}, status_code=202)


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
NOT_ECHOED = frozenset({"event"})


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
    return {
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
        **masivo_fields(result["status"], iso_ms(result.get("processed_at")), detail.get("rules_applied")),
    }


# Masivo's per-status times. The events table keeps the latest result only, so the time known
# is the current status's (when that result was processed); an earlier transition's time (the
# resolved_at of a now REVERSED event) is null. processing_at is set for a first result only.
STATUS_TIMES = {
    "RESOLVED": "resolved_at",
    "CANCELLED": "cancelled_at",
    "EXPIRED": "expired_at",
    "REVERSED": "reversed_at",
}
FIRST_STATUSES = frozenset({"PENDING", "RESOLVED", "FAILED", "REJECTED"})
NO_TIMES = dict.fromkeys(("processing_at", *STATUS_TIMES.values()))


def masivo_fields(status: str | None, processed_at: str | None, applied: Any) -> dict[str, Any]:
    """Masivo's reply fields: processing_at, resolved_at, cancelled_at, expired_at, reversed_at
    (ISO 8601 or null) and rewarding_campaigns (the campaign ids that rewarded the event)."""
    times = dict(NO_TIMES)
    if processed_at is not None:
        if status in FIRST_STATUSES:
            times["processing_at"] = processed_at
        if status in STATUS_TIMES:
            times[STATUS_TIMES[status]] = processed_at
    ids = [a.get("campaign_id") if isinstance(a, dict) else a for a in applied or ()]
    return {**times, "rewarding_campaigns": [i for i in ids if isinstance(i, str)]}


def iso_ms(ms: Any) -> str | None:
    """Epoch ms as ISO 8601 UTC (the format GET /behavior/events/{id} reads from the sink)."""
    if isinstance(ms, bool) or not isinstance(ms, int | float):
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()
