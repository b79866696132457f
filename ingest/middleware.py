"""Pure ASGI middleware (cheap on the hot path): body size limits and request metrics."""

from __future__ import annotations

import time

import orjson

from ingest.errors import error_body
from ingest.metrics import LATENCY, REQUESTS


class BodyTooLarge(Exception):
    pass


class IngestMiddleware:
    """Answers 413 for bodies over the limit (Content-Length or streamed) and records metrics.
    (Single events do not come through here: ingest/fastpath.py does the same for them.)"""

    def __init__(self, app, max_body: int, max_bulk_body: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_bulk_body = max_bulk_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bulk_body if scope["path"].endswith("/bulk") else self.max_body
        started = time.perf_counter()
        status = [0]

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                extra = scope.get("state", {}).get("rate_headers")
                if extra and status[0] != 429:
                    message["headers"] = [
                        *message.get("headers", []),
                        *((k.lower().encode(), v.encode()) for k, v in extra.items()),
                    ]
            await send(message)

        try:
            if _declared_length(scope) > limit:
                raise BodyTooLarge
            await self.app(scope, _limited(receive, limit), send_wrapper)
        except BodyTooLarge:
            if status[0] == 0:
                await too_large(send_wrapper, limit)
        route = scope.get("route")
        label = getattr(route, "path", "unmatched")
        REQUESTS.labels(label, str(status[0])).inc()
        LATENCY.labels(label).observe(time.perf_counter() - started)


def _declared_length(scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _limited(receive, limit: int):
    seen = [0]

    async def wrapped():
        message = await receive()
        if message["type"] == "http.request":
            seen[0] += len(message.get("body", b""))
            if seen[0] > limit:
                raise BodyTooLarge
        return message

    return wrapped


async def too_large(send, limit: int) -> None:
    body = orjson.dumps(error_body("payload_too_large", f"request body over {limit} bytes"))
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
