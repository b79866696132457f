"""One error body for every failure: {"error": {"code", "message", "fields": [{path, reason}]}}.

Handlers turn framework exceptions into that shape so no input ever produces a bare 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from schemas.intake import error_body, safe, validation_fields  # noqa: F401 - shared with the router

log = logging.getLogger(__name__)

_CODES = {
    400: "malformed_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answered with the standard body; `fields` are (path, reason) pairs."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        fields: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.fields = fields or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.fields)


def allowed_methods(request: Request, fallback: str) -> str:
    """Every method the spec gives this path. Starlette names only the first route that matched
    the path (GET for /admin/program, leaving out PUT); paths outside the spec keep its answer."""
    path = request.url.path
    for template, operations in request.app.openapi()["paths"].items():
        if compile_path(template)[0].match(path):
            methods = {m.upper() for m in operations} | ({"HEAD"} if "get" in operations else set())
            return ", ".join(sorted(methods))
    return fallback


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def install(app: FastAPI) -> None:
    """Register the exception handlers that produce the standard error body."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(ApiError(400, "request body is not valid JSON"))
        return error_response(ApiError(422, "request failed validation", fields=validation_fields(errors)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 400:
            message = f"malformed request body: {message}"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request, headers.get("Allow", ""))
        return error_response(ApiError(exc.status_code, message, headers=headers or None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(ApiError(500, "internal error", code="internal"))
