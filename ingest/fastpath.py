"""POST /behavior/events in plain ASGI, ahead of the framework and its middleware.

The single-event request is the hottest one, and the framework's own layers (FastAPI's
telemetry check, Starlette's error and body-limit middleware, routing, dependency solving, the
Request object, JSONResponse's stdlib JSON) cost more CPU than the request's own work
(docs/benchmarks.md#ingest). `IngestApp.__call__` (ingest/app.py) hands the requests this path
takes (POST, exact path, no query string, no root path) to `FastEvents` before any of that.
The answers are the framework path's, in the same order: 413 for a body over the limit
(declared, then streamed), the auth and rate-limit answers of `authorize` (401/403/429), the
400/422 of `event_record`, the 503 of `enqueue`, the 202 body; the X-RateLimit-* headers on
every answer once the key passed, the same request metrics (route label = the route's path),
and for an unexpected exception the logged 500 of the server-error handler. ?wait=true,
?dry_run=true, other methods and trailing slashes go through the framework as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

from ingest.dependencies import IngestState, authorize, key_of
from ingest.errors import ApiError, error_response
from ingest.metrics import LATENCY, REQUESTS, child
from ingest.middleware import BodyTooLarge, too_large
from ingest.routers.events import event_record
from ingest.submit import accepted_body, enqueue

log = logging.getLogger("ingest.errors")  # the logger of the framework path's 500 handler
EVENTS_PATH = "/behavior/events"
JSON_HEADERS = [(b"content-type", b"application/json")]


class FastEvents:
    """The single-event endpoint under each of `prefixes` ("" and Masivo's base path)."""

    def __init__(self, max_body: int, prefixes: Iterable[str] = ("",)) -> None:
        self.state: IngestState | None = None  # the worker's, set by the app's startup
        self.max_body = max_body
        self.paths = frozenset(prefix + EVENTS_PATH for prefix in prefixes)

    def handles(self, scope: Scope) -> bool:
        return (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in self.paths
            and not scope.get("query_string")
            and not scope.get("root_path")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        route = scope["path"]
        sent = [0]  # the status once the response started
        rate: list[tuple[bytes, bytes]] = []

        async def respond(status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
            sent[0] = status
            head = [(b"content-length", str(len(body)).encode()), *headers, *rate]
            await send({"type": "http.response.start", "status": status, "headers": head})
            await send({"type": "http.response.body", "body": body})

        async def send_with_rate(message: Message) -> None:  # a framework Response's messages
            if message["type"] == "http.response.start":
                sent[0] = message["status"]
                if rate and sent[0] != 429:
                    message["headers"] = [*message.get("headers", []), *rate]
            await send(message)

        try:
            authorization = x_api_key = declared = None
            for name, value in scope["headers"]:  # the first of each, as Starlette's Headers
                if name == b"content-length" and declared is None:
                    declared = _length(value)
                elif name == b"authorization" and authorization is None:
                    authorization = value.decode("latin-1")
                elif name == b"x-api-key" and x_api_key is None:
                    x_api_key = value.decode("latin-1")
            try:
                if declared is not None and declared > self.max_body:
                    raise BodyTooLarge
                state = self.state
                if state is None:
                    raise RuntimeError("the app has not started")
                decision = authorize(state, key_of(authorization, x_api_key), "ingest")
                rate = [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]
                raw = await _body(receive, self.max_body)
                if raw is None:
                    return  # the client went away: nobody to answer
                accepted = await enqueue(state, event_record(state, raw))
                await respond(202, orjson.dumps(accepted_body(accepted)), JSON_HEADERS)
            except ApiError as exc:
                await error_response(exc)(scope, receive, send_with_rate)
            except BodyTooLarge:
                await too_large(send_with_rate, self.max_body)
        except Exception:
            log.exception("unhandled error")
            if not sent[0]:
                await error_response(ApiError(500, "internal error", code="internal"))(scope, receive, send)
            raise
        child(REQUESTS, route, str(sent[0])).inc()
        child(LATENCY, route).observe(time.perf_counter() - started)


def _length(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


async def _body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, BodyTooLarge past `limit` bytes, None when the client disconnected."""
    chunks: list[Any] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
