"""Bits shared by the routers: documented error responses and path/query parameter types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import Path, Query, Request

from ingest.dependencies import Admin, Ingest
from ingest.errors import ApiError
from ingest.inputs import NO_CONTROL_PATTERN, refuse
from ingest.models import ErrorResponse

ERRORS = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Malformed JSON",
        401: "Missing or unknown API key",
        403: "API key without the needed scope",
        413: "Body over the size limit",
        422: "Validation failed (fields name the failing paths)",
        429: "Rate limited (see Retry-After and X-RateLimit-*)",
        503: "Kafka (or PostgreSQL) unavailable; retry after Retry-After",
    }.items()
}
NOT_FOUND = {404: {"model": ErrorResponse, "description": "Unknown id"}}

# Ids in paths follow the body's rule (no control characters): a NUL reached PostgreSQL as a 500.
PathId = Annotated[str, Path(min_length=1, max_length=256, pattern=NO_CONTROL_PATTERN)]
Wait = Annotated[bool, Query(description="Wait for the processed result (sync mode).")]
# The bound is INGEST_MAX_WAIT_TIMEOUT_S's default; a deployment that lowers it refuses more.
Timeout = Annotated[
    float | None,
    Query(gt=0, le=30, description="Seconds to wait with wait=true (default 5, at most 30)."),
]


async def clean_body(request: Request, _: Ingest) -> None:
    """Refuse control characters and out-of-range integers anywhere in a framework-parsed body
    (the event endpoints check their raw bodies themselves). Takes the auth dependency (run
    once per request, cached) so a request without a valid key gets its 401 first."""
    refuse(await request.body())


async def clean_admin_body(request: Request, _: Admin) -> None:
    """clean_body for the admin scope."""
    refuse(await request.body())


def read_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "request body is not valid JSON") from None


def iso_time(description: str) -> Any:
    """A query parameter holding an ISO 8601 date-time, read by `instant` (not by pydantic's
    datetime, which also takes epoch numbers such as `0.0`)."""
    return Query(max_length=64, json_schema_extra={"format": "date-time"}, description=description)


def instant(name: str, value: str | None) -> datetime | None:
    """An ISO 8601 date-time (UTC when it names no zone); epoch numbers are refused."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(422, f"bad {name}", fields=[(name, "an ISO 8601 date-time")]) from None
    if value.strip().lstrip("-+").isdigit():
        raise ApiError(422, f"bad {name}", fields=[(name, "an ISO 8601 date-time")])
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
