"""Request dependencies: the shared app state, API-key auth with scopes, and rate limiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from ingest.audit import AuditStore
from ingest.config import IngestConfig
from ingest.errors import ApiError
from ingest.events import EventBuilder
from ingest.history import ProgramHistory
from ingest.lookup import Lookup
from ingest.programs import ProgramPublisher, ProgramSource
from ingest.ratelimit import Decision, RateLimiter
from ingest.replies import OnDemand, ReplyHub
from plumbing.producer import EventProducer
from schemas.settings import Settings


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class IngestState:
    """Everything a request handler needs; built once per worker by create_app."""

    settings: Settings
    config: IngestConfig
    instance_id: str
    programs: ProgramSource
    builder: EventBuilder
    producer: EventProducer
    hub: ReplyHub
    lookup: Lookup
    publisher: ProgramPublisher
    limiter: RateLimiter
    clock: Callable[[], int] = wall_clock_ms
    history: ProgramHistory | None = None  # program.history (versions, rollback)
    audit: AuditStore | None = None  # the admin_audit table
    dry_runs: Any = None  # ingest/dry_run.DryRuns (create_app's lifespan makes it)
    results: OnDemand | None = None  # the ?wait=true ResultListener, started by the first one
    closers: list[Callable[[], None]] = field(default_factory=list)


def api_key(request: Request) -> str | None:
    """The key from X-API-Key or Authorization: Bearer (documented as security schemes)."""
    headers = request.headers
    return key_of(headers.get("authorization"), headers.get("x-api-key"))


def key_of(authorization: str | None, x_api_key: str | None) -> str | None:
    """The API key of a request given its two headers (the first of each, as sent).

    An Authorization header that is not `Bearer <token>` is refused even beside a valid
    X-API-Key: the spec declares it a bearer token, so a malformed one is a client error."""
    token = None
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "Authorization must be 'Bearer <API key>'")
    return x_api_key or token


def authorize(state: IngestState, key: str | None, scope: str) -> Decision:
    """Authenticate, authorise and rate-limit one request: its rate-limit decision, or the
    ApiError (401, 403, 429) to answer. Shared by `require` and ingest/fastpath.py."""
    if not key:
        raise ApiError(401, "missing API key (X-API-Key or Authorization: Bearer)")
    scopes = state.config.api_keys.get(key)
    if scopes is None:
        raise ApiError(401, "unknown API key")
    if scope not in scopes:
        raise ApiError(403, f"API key lacks the {scope!r} scope")
    decision = state.limiter.take(key)
    if not decision.allowed:
        headers = decision.headers() | {"Retry-After": str(state.limiter.retry_after())}
        raise ApiError(429, "rate limit exceeded", headers=headers)
    return decision


def require(scope: str):
    """One dependency per request: authenticate, authorise, rate-limit, hand out the state.

    Reads headers itself instead of stacking FastAPI security dependencies: each dependency
    level costs tens of microseconds per request on the hot path. Async so it is not sent
    to the thread pool.
    """

    async def check(request: Request) -> IngestState:
        state: IngestState = request.app.state.ingest
        key = api_key(request)
        decision = authorize(state, key, scope)
        if scope == "admin":  # who, in versions and audit entries: the key's name, never the key
            request.state.actor = state.config.key_name(key)
        request.state.rate_headers = decision.headers()  # added to any response by middleware
        return state

    return check


Ingest = Annotated[IngestState, Depends(require("ingest"))]
Admin = Annotated[IngestState, Depends(require("admin"))]

SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "the API key as a token"},
}
SECURITY = [{"ApiKey": []}, {"Bearer": []}]
