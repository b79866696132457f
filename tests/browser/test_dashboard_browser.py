"""Each page in chromium: loads without console errors, shows the figures SQL computes, updates live."""

from __future__ import annotations

import psycopg
import pytest

from tests.browser.conftest import KEY, shot

PAGES = ("overview", "campaigns", "tiers", "audiences", "journeys", "webhooks", "segments")
SINCE = "now() - interval '30 days'"


def number(text: str) -> float:
    return float(text.replace(",", ""))


def open_page(page, url: str, name: str, range_: str = "30d") -> None:  # noqa: ANN001
    page.goto(f"{url}/{name}?range={range_}")
    page.wait_for_selector(f"#page[data-loaded='true'][data-range='{range_}']")
    page.wait_for_function("() => document.querySelectorAll('section[data-panel] canvas').length > 0")


def stat(page, id_: str) -> float:  # noqa: ANN001
    return number(page.inner_text(f"[data-stat='{id_}'] .value"))


def table(page, panel: str) -> list[dict[str, str]]:  # noqa: ANN001
    """The table under a chart as the browser shows it: {column: text} per row."""
    return page.eval_on_selector(
        f"table[data-testid='table-{panel}']",
        """t => [...t.tBodies[0].rows].filter(r => !r.querySelector('.empty')).map(r =>
              Object.fromEntries([...r.cells].map(c => [c.dataset.col, c.textContent])))""",
    )


def one(sql: psycopg.Connection, query: str) -> float:
    value = sql.execute(query).fetchone()
    return float(next(iter(value.values())) or 0)


def expected(sql: psycopg.Connection, name: str) -> dict[str, float]:
    """Each page's headline figures for 30 days, in SQL written for the test (not dashboard.queries)."""
    ev = f"FROM events WHERE kind = 'EVENT' AND issued_at >= {SINCE}"
    ll = f"FROM ledger_lines WHERE issued_at >= {SINCE}"
    wd = f"FROM webhook_deliveries WHERE at >= {SINCE}"
    tc, ji = f"changed_at >= {SINCE}", f"FROM journey_instances WHERE entered_at >= {SINCE}"
    queries = {
        "overview": {
            "events": f"SELECT count(*) {ev}",
            "rejected": f"SELECT count(*) {ev} AND status = 'REJECTED'",
            "failed": f"SELECT count(*) {ev} AND status = 'FAILED'",
            "points_issued": f"SELECT sum(amount) {ll} AND kind = 'ACCUMULATION'",
            "points_redeemed": f"SELECT -sum(amount) {ll} AND kind = 'REDEMPTION'",
            "points_expired": f"SELECT sum(amount) {ll} AND kind = 'EXPIRY'",
            "active_customers": f"SELECT count(DISTINCT customer_id) {ev}",
        },
        "campaigns": {
            "campaign_points": f"SELECT sum(amount) {ll} AND kind = 'ACCUMULATION'",
            "skips": "SELECT count(*) FROM events, jsonb_array_elements(result->'rules_skipped') "
            f"WHERE issued_at >= {SINCE}",
            "budgeted": "SELECT count(*) FROM campaign_budgets WHERE budget IS NOT NULL",
            "budgets_exhausted": "SELECT count(*) FROM campaign_budgets "
            "WHERE budget IS NOT NULL AND exhausted_at IS NOT NULL",
        },
        "tiers": {
            "customers": "SELECT count(*) FROM customers",
            "upgrades": f"SELECT count(*) FROM tier_changes WHERE direction = 'TIER_UPGRADE' AND {tc}",
        },
        "audiences": {"members": "SELECT count(*) FROM audience_members"},
        "journeys": {
            "entered": f"SELECT count(*) {ji}",
            "waiting": f"SELECT count(*) {ji} AND status = 'ACTIVE'",
        },
        "webhooks": {
            "attempts": f"SELECT count(*) {wd}",
            "retries": f"SELECT count(*) {wd} AND outcome = 'RETRY'",
            "dead_letters": f"SELECT count(*) FROM dlq WHERE dead_at >= {SINCE}",
            "disabled_endpoints": f"SELECT count(DISTINCT endpoint_id) {wd} AND outcome = 'DISABLED'",
            "success_rate": "SELECT round(100 * avg((outcome = 'DELIVERED')::int) "
            f"FILTER (WHERE outcome <> 'RETRY'), 2) {wd}",
        },
        "segments": {  # the documented view, v_behavior_segments (docs/analytics.md)
            s: f"SELECT count(*) FROM v_behavior_segments WHERE {s}"
            for s in ("high_engager", "purchaser", "advocate", "at_risk")
        },
    }
    return {k: one(sql, q) for k, q in queries[name].items()}


@pytest.mark.parametrize("name", PAGES)
def test_page_shows_the_sql_figures(page, dashboard_url: str, sql: psycopg.Connection, name: str) -> None:  # noqa: ANN001
    open_page(page, dashboard_url, name)
    want = expected(sql, name)
    assert all(v > 0 for v in want.values()), f"the seed should give every figure of {name}: {want}"
    shown = {k: stat(page, k) for k in want}
    assert shown == pytest.approx(want), name
    shot(page, name)
    assert page.console.errors == []


def test_tables_match_sql(page, dashboard_url: str, sql: psycopg.Connection) -> None:  # noqa: ANN001
    """Rows under the charts, not only the headline cards."""
    open_page(page, dashboard_url, "tiers")
    rows = sql.execute(
        "SELECT coalesce(tier, '(none)') AS tier, count(*) AS n FROM customers GROUP BY 1"
    ).fetchall()
    shown = {r["tier"]: number(r["customers"]) for r in table(page, "tier_distribution")}
    assert shown == {r["tier"]: r["n"] for r in rows}
    open_page(page, dashboard_url, "journeys")
    rows = sql.execute(
        "SELECT journey_id, status, count(*) AS n FROM journey_instances "
        f"WHERE entered_at >= {SINCE} GROUP BY 1, 2"
    ).fetchall()
    funnel = {r["journey"]: r for r in table(page, "journey_funnel")}
    for r in rows:
        column = {"ACTIVE": "waiting", "COMPLETED": "completed", "EXITED": "exited"}[r["status"]]
        assert number(funnel[r["journey_id"]][column]) == r["n"]
    open_page(page, dashboard_url, "campaigns")
    rows = sql.execute(
        "SELECT campaign_id, sum(amount) AS points FROM ledger_lines "
        f"WHERE kind = 'ACCUMULATION' AND issued_at >= {SINCE} GROUP BY 1"
    ).fetchall()
    shown = {r["campaign"]: number(r["points"]) for r in table(page, "campaign_totals")}
    assert shown == {r["campaign_id"]: r["points"] for r in rows}
    open_page(page, dashboard_url, "audiences")
    rows = sql.execute("SELECT audience_id, count(*) AS n FROM audience_members GROUP BY 1").fetchall()
    shown = {r["audience"]: number(r["members"]) for r in table(page, "audience_summary")}
    assert {a: n for a, n in shown.items() if n} == {r["audience_id"]: r["n"] for r in rows}
    assert page.console.errors == []


def test_campaign_budget_use_matches_sql(page, dashboard_url: str, sql: psycopg.Connection) -> None:  # noqa: ANN001
    """Per budgeted campaign: budget, spent, remaining, % used (the bar and the table) and when
    it ran out, as campaign_budgets holds them; not range-bound."""
    open_page(page, dashboard_url, "campaigns", "1h")
    rows = sql.execute(
        "SELECT campaign_id, budget, spent, budget - spent AS remaining,"
        " round((100 * spent / budget)::numeric, 2)::float8 AS pct, exhausted_at"
        " FROM campaign_budgets WHERE budget IS NOT NULL"
    ).fetchall()
    assert {r["exhausted_at"] is None for r in rows} == {True, False}  # the seed: one ran out
    shown = {r["campaign"]: r for r in table(page, "campaign_budgets")}
    assert set(shown) == {r["campaign_id"] for r in rows}
    for r in rows:
        cells = shown[r["campaign_id"]]
        figures = [number(cells[c]) for c in ("budget", "spent", "remaining", "pct_used")]
        assert figures == [r["budget"], r["spent"], r["remaining"], r["pct"]]
        assert cells["exhausted_at"] == (r["exhausted_at"].isoformat() if r["exhausted_at"] else "")
    bars = page.evaluate(
        """() => {
          const box = document.querySelector("section[data-panel='campaign_budgets'] canvas");
          const chart = Chart.getChart(box), used = chart.data.datasets[0].data;
          return {axis: chart.options.indexAxis, max: chart.options.scales.x.max,
                  used: Object.fromEntries(chart.data.labels.map((label, i) => [label, used[i]]))};
        }"""
    )
    assert bars == {"axis": "y", "max": 100, "used": {r["campaign_id"]: min(100, r["pct"]) for r in rows}}
    shot(page, "campaign-budgets", "section[data-panel='campaign_budgets']")
    assert page.console.errors == []


def test_range_change_and_live_refresh_without_reload(
    page, dashboard_url: str, sql: psycopg.Connection
) -> None:  # noqa: ANN001
    open_page(page, dashboard_url, "overview")
    page.evaluate("window.__sameDocument = true")
    page.select_option("#range", "1h")
    page.wait_for_selector("#page[data-range='1h'][data-loaded='true']")
    hour = "FROM events WHERE kind = 'EVENT' AND issued_at >= now() - interval '1 hour'"
    before = one(sql, f"SELECT count(*) {hour}")
    assert stat(page, "events") == before
    sql.execute(
        "INSERT INTO events (id, customer_id, type, kind, path, status, issued_at, received_at) "
        "VALUES ('live-1', 'c1', 'APP_OPEN', 'EVENT', 'loyalty', 'RESOLVED', now(), now())"
    )
    try:
        page.wait_for_function(
            "n => Number(document.querySelector(\"[data-stat='events']\").dataset.value) === n",
            arg=before + 1,
        )
        assert page.evaluate("window.__sameDocument") is True  # updated in place, not reloaded
    finally:
        sql.execute("DELETE FROM events WHERE id = 'live-1'")
    assert page.console.errors == []


def test_customer_lookup_finds_a_seeded_customer(page, dashboard_url: str, sql: psycopg.Connection) -> None:  # noqa: ANN001
    page.goto(f"{dashboard_url}/customers")
    page.select_option("#range", "30d")
    page.fill("#customer-id", "c42")
    page.click("#lookup button[type=submit]")
    page.wait_for_selector("#page[data-found='true'][data-loaded='true']")
    wallet = sql.execute("SELECT points, tier FROM wallets WHERE customer_id = 'c42'").fetchone()
    assert stat(page, "points") == wallet["points"]
    assert page.inner_text("[data-stat='tier'] .value") == wallet["tier"]
    events = one(sql, f"SELECT count(*) FROM events WHERE customer_id = 'c42' AND issued_at >= {SINCE}")
    assert len(table(page, "events")) == events > 0
    journeys = sql.execute("SELECT journey_id FROM journey_instances WHERE customer_id = 'c42'").fetchall()
    assert sorted(r["journey_id"] for r in table(page, "customer_journeys")) == sorted(
        r["journey_id"] for r in journeys
    )
    assert len(table(page, "tier_history")) == one(
        sql, "SELECT count(*) FROM tier_changes WHERE customer_id = 'c42'"
    )
    shot(page, "customers")
    assert page.console.errors == []


def test_customer_lookup_says_when_no_customer(page, dashboard_url: str) -> None:  # noqa: ANN001
    page.goto(f"{dashboard_url}/customers?id=nobody-here")
    page.wait_for_selector("#page[data-found='false']")
    assert "no customer" in page.inner_text("#lookup-message")


def test_bad_key_is_refused(context, dashboard_url: str) -> None:  # noqa: ANN001
    context.clear_cookies()
    p = context.new_page()
    try:
        p.goto(f"{dashboard_url}/overview")
        p.wait_for_url("**/login")
        p.fill("#key", "not-the-key-0123")
        p.click("button[type=submit]")
        p.wait_for_selector("#login-error")
        assert "not-the-key-0123" not in p.content()  # never echoed back
        assert not [c for c in context.cookies() if c["name"] == "loyalty_dashboard_key"]
        assert p.request.get(f"{dashboard_url}/api/overview").status == 401
        shot(p, "login-refused")
        p.fill("#key", KEY)
        p.click("button[type=submit]")
        p.wait_for_url("**/overview")
        cookie = next(c for c in context.cookies() if c["name"] == "loyalty_dashboard_key")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    finally:
        p.close()
