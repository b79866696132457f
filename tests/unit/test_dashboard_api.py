"""The dashboard's JSON API and auth through FastAPI's TestClient (no browser), on a seeded database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from dashboard.app import create_app
from dashboard.auth import valid
from dashboard.config import DashboardConfig, admin_keys
from dashboard.ranges import RANGES, parse_range
from dashboard.seed import Load, fresh_database, seed

KEY = "unit-admin-key"
PAGES = ("overview", "campaigns", "tiers", "audiences", "journeys", "webhooks", "segments")


@pytest.fixture(scope="module")
def db(database_url: str) -> Iterator[str]:
    with fresh_database(database_url, "dashunit") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            seed(conn, Load(customers=60, events=600, webhooks=120))
        yield url


@pytest.fixture(scope="module")
def client(db: str) -> Iterator[TestClient]:
    config = DashboardConfig(database_url=db, admin_keys=(KEY, "second-key"), cache_s=0)
    with TestClient(create_app(config)) as c:
        yield c


HEADERS = {"x-api-key": KEY}


@pytest.mark.parametrize("name", PAGES)
@pytest.mark.parametrize("range_", list(RANGES))
def test_every_page_and_range_answers(client: TestClient, name: str, range_: str) -> None:
    resp = client.get(f"/api/{name}", params={"range": range_}, headers=HEADERS)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["range"] == range_ and data["stats"] and data["panels"]
    for panel in data["panels"]:
        assert all(len(row) == len(panel["table"]["columns"]) for row in panel["table"]["rows"])
        if panel["chart"]:
            assert all(len(d["data"]) == len(panel["chart"]["labels"]) for d in panel["chart"]["datasets"])


def test_overview_counts_equal_sql(client: TestClient, db: str) -> None:
    data = client.get("/api/overview?range=7d", headers=HEADERS).json()
    stats = {s["id"]: s["value"] for s in data["stats"]}
    with psycopg.connect(db) as conn:
        events, rejected = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'REJECTED') FROM events "
            "WHERE kind = 'EVENT' AND issued_at >= now() - interval '7 days'"
        ).fetchone()
    assert (stats["events"], stats["rejected"]) == (events, rejected)
    by_type = next(p for p in data["panels"] if p["id"] == "events_by_type")
    assert sum(r[-1] for r in by_type["table"]["rows"]) == events  # the table's totals add up


def test_campaign_budget_use_equals_sql(client: TestClient, db: str) -> None:
    """Per budgeted campaign: budget, spent, remaining, % used and exhausted at, as
    campaign_budgets holds them; the % used bar is the same figure (capped at 100)."""
    data = client.get("/api/campaigns?range=1h", headers=HEADERS).json()  # budgets are not range-bound
    panel = next(p for p in data["panels"] if p["id"] == "campaign_budgets")
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT campaign_id, budget, spent, budget - spent,"
            " round((100 * spent / budget)::numeric, 2)::float8, exhausted_at"
            " FROM campaign_budgets WHERE budget IS NOT NULL ORDER BY 1"
        ).fetchall()
    cols = panel["table"]["columns"]
    shown = sorted(
        [r[cols.index(c)] for c in ("campaign", "budget", "spent", "remaining", "pct_used", "exhausted_at")]
        for r in panel["table"]["rows"]
    )
    assert len(rows) == 2 and any(r[5] for r in rows) and not all(r[5] for r in rows)  # the seed
    assert [tuple(r[:5]) for r in shown] == [r[:5] for r in rows]
    assert [at and datetime.fromisoformat(at) for *_, at in shown] == [r[5] for r in rows]
    bar = dict(zip(panel["chart"]["labels"], panel["chart"]["datasets"][0]["data"], strict=True))
    assert bar == {r[0]: min(100, r[4]) for r in rows}
    stats = {s["id"]: s["value"] for s in data["stats"]}
    assert (stats["budgeted"], stats["budgets_exhausted"]) == (2, 1)


def test_customer_lookup(client: TestClient) -> None:
    data = client.get("/api/customers/c7?range=30d", headers=HEADERS).json()
    assert data["found"] and data["customer_id"] == "c7"
    assert {p["id"] for p in data["panels"]} >= {"profile", "wallet", "ledger", "events", "tier_history"}
    assert client.get("/api/customers/nobody", headers=HEADERS).status_code == 404


def test_unknown_range_is_a_400(client: TestClient) -> None:
    resp = client.get("/api/overview?range=2y", headers=HEADERS)
    assert resp.status_code == 400 and "1h" in resp.json()["detail"]


def test_api_needs_the_admin_key(client: TestClient) -> None:
    client.cookies.clear()
    assert client.get("/api/overview").status_code == 401
    assert client.get("/api/overview", headers={"x-api-key": "wrong"}).status_code == 401
    page = client.get("/overview", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"


def test_login_sets_a_strict_httponly_cookie_and_never_echoes_a_refused_key(client: TestClient) -> None:
    client.cookies.clear()
    refused = client.post("/login", data={"key": "guess-123456"}, follow_redirects=False)
    assert refused.status_code == 401 and "guess-123456" not in refused.text
    assert "set-cookie" not in refused.headers
    ok = client.post("/login", data={"key": KEY}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/overview"
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    page = client.get("/overview")
    assert page.status_code == 200 and KEY not in page.text
    assert client.get("/api/tiers").status_code == 200  # the cookie alone is enough
    out = client.post("/logout", follow_redirects=False)
    assert out.status_code == 303
    client.cookies.clear()


def test_ops_endpoints_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").status_code == 200
    assert "dashboard_requests_total" in client.get("/metrics").text


def test_readyz_is_503_without_a_database() -> None:
    config = DashboardConfig(database_url="postgresql://127.0.0.1:1/none", admin_keys=(KEY,))
    with TestClient(create_app(config)) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503


def test_key_check_and_admin_keys() -> None:
    assert valid("a", ("b", "a")) and not valid("", ("",)) and not valid("ab", ("a",))
    assert admin_keys("i1:ingest,a1:admin,both:ingest+admin") == ("a1", "both")
    assert admin_keys(None) == ("dev-key",)


def test_buckets_align_with_date_bin() -> None:
    now = datetime(2026, 12, 1, 10, 7, 30, tzinfo=UTC)
    day = parse_range("24h").buckets(now)
    assert day[-1] == datetime(2026, 12, 1, 10, 0, tzinfo=UTC) and day[1] - day[0] == timedelta(minutes=15)
    assert len(parse_range("1h").buckets(now)) == 61
    with pytest.raises(ValueError):
        parse_range("1y")


def _without_times(page: dict) -> dict:
    return {**page, "stats": [s for s in page["stats"] if s["id"] != "as_of"]}


@pytest.mark.parametrize("name", ["overview", "campaigns", "segments"])
@pytest.mark.parametrize("range_", ["7d", "30d"])
def test_rollups_give_the_raw_figures(db: str, name: str, range_: str) -> None:
    """Rolled-up hours + raw edges == raw rows, also with rows newer than the rebuild and rows in
    the range's first, partial hour."""
    from psycopg.rows import dict_row

    from dashboard import queries, rollups

    rng = parse_range(range_)
    with psycopg.connect(db, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        rollups.refresh_all(conn, full=True)
        try:
            with conn.transaction():  # one now() for the inserts and the pages
                _insert_new_and_edge_rows(conn, rng.span.days)
                assert "h0" in queries._params(conn, rng)  # the hours are read from the rollup
                rolled = queries.PAGES[name](conn, rng)
                conn.execute("DELETE FROM dashboard_rollup_state")
                assert "h0" not in queries._params(conn, rng)
                raw = queries.PAGES[name](conn, rng)
                raise _Rollback
        except _Rollback:
            pass
        finally:
            conn.execute("DELETE FROM events WHERE id IN ('roll-new', 'roll-edge')")
    if name != "segments":  # the snapshot is as of its refresh, before the two new rows
        assert _without_times(rolled) == _without_times(raw)
    else:
        assert rolled["stats"][:4] != [] and rolled["panels"][1] == raw["panels"][1]


def _insert_new_and_edge_rows(conn: psycopg.Connection, days: int) -> None:
    """A row newer than the rebuild, and one inside the range's first, partial hour: halfway
    between its start and the first whole hour, at most 30 s in (a fixed 30 s lands in a
    rolled-up hour when the test runs in the last 30 s before an hour)."""
    since = f"(now() - interval '{days} days')"
    first_hour = f"(date_bin('1 hour', {since}, TIMESTAMPTZ '2000-01-01 00:00:00+00') + interval '1 hour')"
    edge = f"{since} + least(interval '30 seconds', ({first_hour} - {since}) / 2)"
    conn.execute(
        "INSERT INTO events (id, customer_id, type, kind, path, status, issued_at) VALUES "
        "('roll-new', 'c1', 'PURCHASE', 'EVENT', 'loyalty', 'RESOLVED', now()), "
        f"('roll-edge', 'c2', 'REFERRAL', 'EVENT', 'loyalty', 'REJECTED', {edge})"
    )


class _Rollback(Exception):
    """Leaves the transaction that emptied dashboard_rollup_state, putting the state back."""
