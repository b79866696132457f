"""Browser tests: Debian's chromium driven by Playwright against a dashboard on a seeded database.

They skip (with the reason) when /usr/bin/chromium or the playwright package is missing, unless
REQUIRE_BROWSER=1, when they fail instead (the CI stage .ci/browser.sh sets it). Playwright never
downloads a browser here: it launches the system chromium by path.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from dashboard.config import DashboardConfig
from dashboard.rollups import refresh_all
from dashboard.seed import Load, fresh_database, seed

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".local" / "screenshots"
KEY = "browser-admin-key"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def _missing() -> str | None:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not installed (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright not installed (pip install playwright; never `playwright install`)"
    return None


@pytest.fixture(scope="session")
def browser_ready() -> None:
    reason = _missing()
    if reason and os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def dash_db(database_url: str, browser_ready: None) -> Iterator[str]:
    """A fresh sink database holding dashboard.seed's default load."""
    with fresh_database(database_url, "dashbrowser") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            seed(conn, Load())
            refresh_all(conn, full=True)  # the 7d/30d pages read the rollups, as in production
        yield url


@pytest.fixture(scope="session")
def sql(dash_db: str) -> Iterator[psycopg.Connection]:
    """The test's own connection: the figures the pages must show, computed independently."""
    with psycopg.connect(dash_db, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        yield conn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def dashboard_url(dash_db: str) -> Iterator[str]:
    """The real service (uvicorn) in a thread; no cache and a 1 s refresh so live updates show fast."""
    import uvicorn

    from dashboard.app import create_app

    config = DashboardConfig(database_url=dash_db, admin_keys=(KEY,), cache_s=0, refresh_s=1)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    while not started.wait(0.05):  # uvicorn sets `started` once it listens
        if server.started:
            started.set()
        if not thread.is_alive():
            raise RuntimeError("dashboard server did not start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def context(browser_ready: None) -> Iterator:
    """One chromium with a fresh profile directory per module. Not per session: Playwright's
    sync API keeps an asyncio loop running in the main thread while it is open, and every
    later test that calls asyncio.run() would fail."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="dash-chromium-")
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        yield ctx
        ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


class Console:
    """Console errors and uncaught exceptions of a page."""

    def __init__(self, page) -> None:  # noqa: ANN001 - playwright Page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))


@pytest.fixture
def page(context, dashboard_url: str) -> Iterator:  # noqa: ANN001
    """A signed-in tab (the login form sets the cookie), with its console errors in page.console."""
    p = context.new_page()
    p.console = Console(p)
    p.goto(f"{dashboard_url}/login")
    p.fill("#key", KEY)
    p.click("button[type=submit]")
    p.wait_for_url("**/overview")
    yield p
    p.close()


def shot(page, name: str, selector: str | None = None) -> Path:  # noqa: ANN001
    """The whole page (or the element of `selector`) under .local/screenshots/; with
    DASHBOARD_DOC_SHOTS=dir also the first screen (what docs/img/dashboard/ holds, small enough
    to commit), or the element again."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    target = page.locator(selector) if selector else page
    target.screenshot(path=str(path), **({} if selector else {"full_page": True}))
    docs = os.environ.get("DASHBOARD_DOC_SHOTS")
    if docs:
        Path(docs).mkdir(parents=True, exist_ok=True)
        target.screenshot(path=str(Path(docs) / f"{name}.png"), scale="css")
    return path
