"""The ingest application: create_app wires config, program source, Kafka and lookups.

Every dependency can be injected, so unit tests run without Kafka or PostgreSQL; in production
(service.py) each worker process builds its own producer and reply listener at startup.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import Receive, Scope, Send

from ingest import errors
from ingest.audit import AuditStore, PgAudit
from ingest.config import IngestConfig
from ingest.dependencies import SECURITY, SECURITY_SCHEMES, IngestState, wall_clock_ms
from ingest.dry_run import DryRuns
from ingest.events import EventBuilder
from ingest.fastpath import FastEvents
from ingest.history import KafkaHistory, ProgramHistory
from ingest.inputs import JSON_SCHEMAS, with_json_refs
from ingest.lookup import Lookup, PgLookup, aclose, aopen
from ingest.middleware import IngestMiddleware
from ingest.models import EventIn, RollbackIn
from ingest.programs import (
    ProgramPublisher,
    ProgramSource,
    TypeRegistry,
    table_publisher,
    table_source,
)
from ingest.ratelimit import RateLimiter, shared
from ingest.replies import OnDemand, ReplyHub, ResultListener
from ingest.routers import (
    admin,
    coupons,
    customers,
    events,
    health,
    identity,
    leaderboards,
    resources,
    simulate,
    versions,
)
from ingest.simulate import SimulateIn
from plumbing.producer import AsyncProducer, EventProducer
from schemas.settings import Settings

log = logging.getLogger(__name__)
# The public (non-admin) routes are also served under Masivo's storefront base path, so a
# Masivo integration only changes its base URL (docs/masivo-compatibility.md).
STOREFRONT_PREFIX = "/api/storefront/v1"
STOREFRONT_ROUTERS = (events, customers, identity, coupons)


class IngestApp(FastAPI):
    """FastAPI, with single events answered ahead of its middleware (ingest/fastpath.py)."""

    fast: FastEvents | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast
        if fast is not None and fast.handles(scope):
            await fast(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def new_instance_id() -> str:
    """Unique per worker process: results come back to the instance that waits for them."""
    return f"ingest-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def create_app(
    settings: Settings | None = None,
    config: IngestConfig | None = None,
    *,
    programs: ProgramSource | None = None,
    producer: EventProducer | None = None,
    lookup: Lookup | None = None,
    publisher: ProgramPublisher | None = None,
    hub: ReplyHub | None = None,
    history: ProgramHistory | None = None,
    audit: AuditStore | None = None,
    listen_for_results: bool | None = None,
    clock: Callable[[], int] = wall_clock_ms,
    instance_id: str | None = None,
) -> FastAPI:
    """Build the app; Kafka-backed parts not injected are created when the app starts."""
    settings = settings or Settings.from_env()
    config = config or IngestConfig.from_env()
    listen = producer is None if listen_for_results is None else listen_for_results

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = _build_state(settings, config, programs, producer, lookup, publisher, hub, clock, instance_id)
        state.history = history or KafkaHistory(settings)
        state.audit = audit or PgAudit(settings.database_url)
        # ?wait=true results: their consumer starts with the first one (ingest/replies.py)
        make = (lambda: ResultListener(settings, state.instance_id, state.hub)) if listen else None
        state.results = OnDemand(make)
        state.closers.append(state.results.close)
        # event dry runs: their reply consumer starts with the first one (listen: as for results)
        state.dry_runs = DryRuns(settings, state.instance_id, listen=listen)
        state.closers.append(state.dry_runs.close)
        await aopen(state.lookup)  # the read pool belongs to this loop
        app.state.ingest = app.fast.state = state
        log.info("ingest ready", extra={"instance_id": state.instance_id})
        try:
            yield
        finally:
            await aclose(state.lookup)
            for close in reversed(state.closers):
                close()

    app = IngestApp(
        title="Loyalty ingest API",
        version="1.0.0",
        description="Front door of the loyalty engine: behaviour events, commands, customers.",
        lifespan=lifespan,
    )
    errors.install(app)
    public = (events, customers, identity, coupons, leaderboards)
    for module in (*public, admin, versions, resources, simulate, health):
        app.include_router(module.router)
    for module in STOREFRONT_ROUTERS:  # Masivo's base path: only the base URL changes
        app.include_router(module.router, prefix=STOREFRONT_PREFIX)
    app.add_middleware(
        IngestMiddleware, max_body=config.max_body_bytes, max_bulk_body=config.max_bulk_body_bytes
    )
    app.fast = FastEvents(config.max_body_bytes, ("", STOREFRONT_PREFIX))
    app.openapi = lambda: _openapi_with_security(app)
    return app


def _openapi_with_security(app: FastAPI) -> dict:
    """Declare the API-key schemes (auth is one plain dependency, see dependencies.require)
    and EventIn (the event endpoints parse their bodies themselves, for speed)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {})
        components["securitySchemes"] = SECURITY_SCHEMES
        event = EventIn.model_json_schema(ref_template="#/components/schemas/{model}")
        program, program_defs = admin.program_schema()
        rollback = RollbackIn.model_json_schema(ref_template="#/components/schemas/{model}")
        simulation = SimulateIn.model_json_schema(ref_template="#/components/schemas/{model}")
        components.setdefault("schemas", {}).update(
            event.pop("$defs", {}), EventIn=event, **JSON_SCHEMAS, **program_defs, Program=program,
            RollbackIn=rollback, **simulation.pop("$defs", {}), SimulateIn=simulation,
        )
        for path, operations in schema["paths"].items():
            if path != "/healthz":
                for operation in operations.values():
                    operation["security"] = SECURITY
        app.openapi_schema = with_json_refs(schema)
    return app.openapi_schema


def ingest_producer(settings: Settings, config: IngestConfig) -> AsyncProducer:
    """A worker's Kafka producer (also bench/_ingest_floor.py's, so the floor measures the same)."""
    return AsyncProducer(
        settings,
        ack_timeout_s=config.ack_timeout_s,  # a 202 means acked; past this a 503
        linger_ms=config.linger_ms,
        config={"compression.type": "lz4", "queue.buffering.max.messages": 500_000},
        name="ingest-producer",
        poll_on_loop=True,  # no poll thread: the worker's loop polls while sends are in flight
        poll_tick_s=config.poll_tick_s,
    )


def _build_state(
    settings: Settings,
    config: IngestConfig,
    programs: ProgramSource | None,
    producer: EventProducer | None,
    lookup: Lookup | None,
    publisher: ProgramPublisher | None,
    hub: ReplyHub | None,
    clock: Callable[[], int],
    instance_id: str | None,
) -> IngestState:
    closers: list[Callable[[], None]] = []
    programs = programs or table_source(settings)
    stop = getattr(programs, "stop", None) or getattr(programs, "close", None)
    if callable(stop):
        closers.append(stop)
    if producer is None:
        kafka = ingest_producer(settings, config).start()
        closers.append(kafka.close)
        producer = kafka
    return IngestState(
        settings=settings,
        config=config,
        instance_id=instance_id or new_instance_id(),
        programs=programs,
        builder=EventBuilder(config, TypeRegistry(programs)),
        producer=producer,
        hub=hub or ReplyHub(),
        lookup=lookup or PgLookup(settings.database_url),
        publisher=publisher or table_publisher(settings),
        limiter=RateLimiter(
            config.rate_limit_per_s, config.rate_limit_burst, list(config.api_keys), shared()
        ),
        clock=clock,
        closers=closers,
    )
