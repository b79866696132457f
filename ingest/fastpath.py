"""POST /behavior/events straight from the ASGI middleware, without the framework's routing.

A single-event request spent more CPU in routing, dependency solving and the exception
middleware than in its own work (docs/benchmarks.md#ingest). A request this path takes (POST,
exact path, no query string, no root path) runs the same code as the routed endpoint: the
same auth/rate-limit dependency, `accept_event`, and ApiError answered by the same
`error_response` the exception handler uses. Anything else (?wait=true, other methods,
trailing slashes) goes through the framework as before; unexpected exceptions still reach
the server-error handler, since the middleware sits inside it.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from ingest.dependencies import require
from ingest.errors import ApiError, error_response
from ingest.routers.events import accept_event

EVENTS_PATH = "/behavior/events"


class FastEvents:
    """The single-event endpoint under each of `prefixes` ("" and Masivo's base path)."""

    def __init__(self, prefixes: Iterable[str] = ("",)) -> None:
        self.paths = frozenset(prefix + EVENTS_PATH for prefix in prefixes)
        self.check = require("ingest")

    def handles(self, scope: Scope) -> bool:
        return (
            scope["method"] == "POST"
            and scope["path"] in self.paths
            and not scope.get("query_string")
            and not scope.get("root_path")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            state = await self.check(request)
            response = await accept_event(request, state)
        except ApiError as exc:
            response = error_response(exc)
        await response(scope, receive, send)
