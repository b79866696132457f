"""GET /login (the form), POST /login (check the key, set the cookie), POST /logout."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from dashboard.auth import clear_cookie, set_cookie, valid
from dashboard.metrics import LOGINS

router = APIRouter(include_in_schema=False)
MAX_FORM = 4096


def _form(request: Request, error: str | None = None, status: int = 200) -> HTMLResponse:
    context = {"error": error, "title": "Sign in"}
    return request.app.state.templates.TemplateResponse(request, "login.html", context, status_code=status)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return _form(request)


@router.post("/login", response_model=None)
async def login(request: Request) -> HTMLResponse | RedirectResponse:
    """The key comes as a urlencoded form field; a refused key gets the form again (401), empty."""
    body = await request.body()
    key = parse_qs(body[:MAX_FORM].decode(errors="replace")).get("key", [""])[0].strip()
    config = request.app.state.config
    if not valid(key, config.admin_keys):
        LOGINS.labels("refused").inc()
        return _form(request, "That key is not an admin key.", 401)
    LOGINS.labels("ok").inc()
    response = RedirectResponse("/overview", status_code=303)
    set_cookie(response, key, config.secure_cookie)
    return response


@router.post("/logout")
def logout() -> RedirectResponse:
    response = RedirectResponse("/login", status_code=303)
    clear_cookie(response)
    return response
