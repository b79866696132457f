"""The admin key, taken once on the login page and kept in an HttpOnly, SameSite=Strict cookie.

The key is never written into a page or a JSON answer, and it is compared in constant time
against every admin key (no early exit), so timing says nothing about which key nearly matched.
Scripts (the benchmark) may send X-API-Key instead of the cookie.
"""

from __future__ import annotations

import hmac

from fastapi import Request, Response

COOKIE = "loyalty_dashboard_key"
MAX_AGE_S = 12 * 3600


class NotAuthenticated(Exception):
    """No valid admin key on the request; HTML pages redirect to /login, the API answers 401."""

    def __init__(self, api: bool) -> None:
        super().__init__("admin key required")
        self.api = api


def valid(candidate: str | None, keys: tuple[str, ...]) -> bool:
    if not candidate:
        return False
    given = candidate.encode()
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key.encode())
    return ok


def presented(request: Request) -> str | None:
    return request.cookies.get(COOKIE) or request.headers.get("x-api-key")


def require_admin(request: Request) -> None:
    """Dependency of every page and API route."""
    if not valid(presented(request), request.app.state.config.admin_keys):
        raise NotAuthenticated(api=request.url.path.startswith("/api/"))


def set_cookie(response: Response, key: str, secure: bool) -> None:
    response.set_cookie(
        COOKIE, key, max_age=MAX_AGE_S, httponly=True, samesite="strict", secure=secure, path="/"
    )


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
