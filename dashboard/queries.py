"""The SQL behind every page, over the sink's tables (docs/analytics.md).

Each time-ranged query filters on an indexed timestamp (`issued_at`, `at`, `changed_at`,
`dead_at`, `entered_at`; 0001 and 0004_dashboard_indexes) so a page reads only its window,
and buckets with date_bin on the origin of dashboard.ranges so Python can list empty buckets.
Every function takes a connection with dict rows and returns {"stats": [...], "panels": [...]}.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg

from dashboard.panels import category_panel, progress_panel, series_panel, stat, table_panel
from dashboard.ranges import ORIGIN, Range

Page = dict[str, Any]

STATUS_GROUP = "CASE status WHEN 'REJECTED' THEN 'rejected' WHEN 'FAILED' THEN 'failed' ELSE 'accepted' END"
POINTS_KIND = (
    "CASE kind WHEN 'ACCUMULATION' THEN 'issued' WHEN 'REDEMPTION' THEN 'redeemed' ELSE 'expired' END"
)
HOUR = timedelta(hours=1)
STATE = """
SELECT now() AS now,
       (SELECT built_at FROM dashboard_rollup_state WHERE name = 'hours') AS hours_at,
       (SELECT built_at FROM dashboard_rollup_state s, pg_class c
        WHERE s.name = 'segments' AND c.relname = 'dashboard_segments' AND c.relispopulated) AS segments_at"""


def _params(conn: psycopg.Connection, rng: Range, **extra: Any) -> dict[str, Any]:
    """now, since, the bucket, and the rollup window [h0, h1) when this range reads rollups."""
    try:
        state = conn.execute(STATE).fetchone()
    except psycopg.errors.UndefinedTable:  # a database before migration 0005
        state = {**conn.execute("SELECT now() AS now").fetchone(), "hours_at": None, "segments_at": None}
    now, since = state["now"], state["now"] - rng.span
    p = {"now": now, "since": since, "bucket": rng.bucket, "origin": ORIGIN, **extra}
    p["segments_at"] = state["segments_at"]
    if state["hours_at"] and rng.bucket >= HOUR:
        h0 = ORIGIN + -((ORIGIN - since) // HOUR) * HOUR  # the first whole hour in range
        h1 = ORIGIN + ((state["hours_at"] - ORIGIN) // HOUR) * HOUR  # hours before it are rolled up
        if h1 > h0:
            p |= {"h0": h0, "h1": h1}
    return p


def _rows(conn: psycopg.Connection, sql: str, params: dict[str, Any]) -> list[dict]:
    return conn.execute(sql, params).fetchall()


def _bin(column: str) -> str:
    return f"date_bin(%(bucket)s, {column}, %(origin)s) AS bucket"


def _source(p: dict[str, Any], rollup: str, raw: str) -> str:
    """Rows (t, ..., n) of the range: raw rows (n = 1) when the range has no rollup window, else
    rollup hours in [h0, h1) plus raw rows in [since, h0) and from h1 on. `raw` ends in a WHERE."""
    if "h0" not in p:
        return f"{raw} AND {{t}} >= %(since)s"
    return (
        f"{rollup} WHERE hour >= %(h0)s AND hour < %(h1)s"
        f" UNION ALL {raw} AND {{t}} >= %(since)s AND {{t}} < %(h0)s"
        f" UNION ALL {raw} AND {{t}} >= %(h1)s"
    )


def event_source(p: dict[str, Any]) -> str:
    """(t, type, outcome, n) of the range's events."""
    raw = f"SELECT issued_at AS t, type, {STATUS_GROUP} AS outcome, 1 AS n FROM events WHERE kind = 'EVENT'"
    rollup = "SELECT hour AS t, type, outcome, events AS n FROM dashboard_event_hours"
    return _source(p, rollup, raw).format(t="issued_at")


def ledger_source(p: dict[str, Any]) -> str:
    """(t, kind, campaign, amount, lines) of the range's ledger lines; amount is absolute."""
    raw = (
        "SELECT issued_at AS t, kind, coalesce(campaign_id, '(none)') AS campaign, abs(amount) AS amount,"
        " 1 AS lines FROM ledger_lines WHERE kind IN ('ACCUMULATION', 'REDEMPTION', 'EXPIRY')"
    )
    rollup = "SELECT hour AS t, kind, campaign_id AS campaign, amount, lines FROM dashboard_ledger_hours"
    return _source(p, rollup, raw).format(t="issued_at")


def skip_source(p: dict[str, Any]) -> str:
    """(t, campaign, reason, n): one row per entry of events.result->'rules_skipped'."""
    raw = (
        "SELECT issued_at AS t, coalesce(s->>'campaign_id', '(none)') AS campaign,"
        " coalesce(s->>'reason', '(none)') AS reason, 1 AS n"
        " FROM events, jsonb_array_elements(result->'rules_skipped') AS s"
        " WHERE result->'rules_skipped' <> '[]'::jsonb AND jsonb_typeof(result->'rules_skipped') = 'array'"
    )
    rollup = "SELECT hour AS t, campaign_id AS campaign, reason, skips AS n FROM dashboard_skip_hours"
    return _source(p, rollup, raw).format(t="issued_at")


# ---------------------------------------------------------------- overview

ACTIVE_CUSTOMERS = "SELECT count(*) AS n FROM customers WHERE last_event_at >= %(since)s"


def _totals(rows: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in rows:
        out[row["series"]] = out.get(row["series"], 0) + (row["value"] or 0)
    return out


def overview(conn: psycopg.Connection, rng: Range) -> Page:
    p = _params(conn, rng)
    buckets = rng.buckets(p["now"])
    events, ledger = event_source(p), ledger_source(p)
    by_type = _rows(
        conn, f"SELECT {_bin('t')}, type AS series, sum(n) AS value FROM ({events}) x GROUP BY 1, 2", p
    )
    outcome = _rows(
        conn, f"SELECT {_bin('t')}, outcome AS series, sum(n) AS value FROM ({events}) x GROUP BY 1, 2", p
    )
    flow_sql = (
        f"SELECT {_bin('t')}, {POINTS_KIND} AS series, sum(amount) AS value FROM ({ledger}) x GROUP BY 1, 2"
    )
    points = _rows(conn, flow_sql, p)
    outcomes, flows = _totals(outcome), _totals(points)
    active = conn.execute(ACTIVE_CUSTOMERS, p).fetchone()["n"]
    per = rng.bucket_label
    return {
        "stats": [
            stat("events", "events", sum(outcomes.values())),
            stat("accepted", "accepted", outcomes.get("accepted")),
            stat("rejected", "rejected", outcomes.get("rejected")),
            stat("failed", "failed", outcomes.get("failed")),
            stat("points_issued", "points issued", flows.get("issued")),
            stat("points_redeemed", "points redeemed", flows.get("redeemed")),
            stat("points_expired", "points expired", flows.get("expired")),
            stat("active_customers", "active customers", active),
        ],
        "panels": [
            series_panel("events_by_type", f"Events per {per} by type", by_type, buckets),
            series_panel("events_by_outcome", f"Accepted vs rejected vs failed per {per}", outcome, buckets),
            series_panel(
                "points_flow",
                f"Points issued / redeemed / expired per {per}",
                points,
                buckets,
                "line",
                total=False,
            ),
        ],
    }


# ---------------------------------------------------------------- campaigns


# the budgeted campaigns now (campaign_budgets, kept by the sink from the BUDGET_DECISION
# commands; not range-bound): pct_used = 100 * spent / budget (above 100 when a budget was
# lowered below what was already spent)
CAMPAIGN_BUDGETS = """
SELECT campaign_id AS campaign, reward_id, budget, spent, remaining,
       round((100 * spent / nullif(budget, 0))::numeric, 2) AS pct_used, exhausted_at
FROM campaign_budgets WHERE budget IS NOT NULL ORDER BY pct_used DESC NULLS LAST, campaign"""


def _budgets(conn: psycopg.Connection) -> list[dict]:
    try:
        return _rows(conn, CAMPAIGN_BUDGETS, {})
    except psycopg.errors.UndefinedTable:  # a database before migration 0010_campaign_budgets
        return []


def campaigns(conn: psycopg.Connection, rng: Range) -> Page:
    p = _params(conn, rng) | {"day": timedelta(days=1)}
    days = Range("days", rng.span, timedelta(days=1)).buckets(p["now"])
    acc = f"SELECT * FROM ({ledger_source(p)}) x WHERE kind = 'ACCUMULATION'"
    per_day = _rows(
        conn,
        f"SELECT date_bin(%(day)s, t, %(origin)s) AS bucket, campaign AS series, sum(amount) AS value "
        f"FROM ({acc}) a GROUP BY 1, 2",
        p,
    )
    totals = _rows(
        conn,
        f"SELECT campaign, sum(amount) AS points, sum(lines) AS lines FROM ({acc}) a "
        "GROUP BY 1 ORDER BY points DESC, campaign",
        p,
    )
    skips = f"({skip_source(p)})"
    skipped = _rows(
        conn,
        f"SELECT campaign, reason, sum(n) AS skips FROM {skips} s GROUP BY 1, 2 "
        "ORDER BY skips DESC, campaign, reason LIMIT 20",
        p,
    )
    for row in skipped:
        row["rule"] = f"{row['campaign']}: {row['reason']}"
    budgets = _budgets(conn)
    return {
        "stats": [
            stat("campaign_points", "points from campaigns", sum(r["points"] or 0 for r in totals)),
            stat("campaigns", "campaigns awarding", len(totals)),
            stat(
                "skips",
                "rules skipped",
                conn.execute(f"SELECT sum(n) AS n FROM {skips} s", p).fetchone()["n"],
            ),
            stat("budgeted", "budgeted campaigns", len(budgets)),
            stat(
                "budgets_exhausted", "budgets exhausted", sum(r["exhausted_at"] is not None for r in budgets)
            ),
        ],
        "panels": [
            series_panel("campaign_days", "Points per campaign per day", per_day, days),
            progress_panel(
                "campaign_budgets",
                "Budget use (now)",
                budgets,
                "campaign",
                "pct_used",
                ["reward_id", "budget", "spent", "remaining", "pct_used", "exhausted_at"],
            ),
            category_panel(
                "campaign_totals", "Points per campaign", totals, "campaign", ["points"], extra=["lines"]
            ),
            category_panel(
                "rules_skipped",
                "Top 20 reasons in rules_skipped",
                skipped,
                "rule",
                ["skips"],
                extra=["campaign", "reason"],
            ),
        ],
    }


# ---------------------------------------------------------------- tiers

TIER_DISTRIBUTION = """
SELECT coalesce(tier, '(none)') AS tier, count(*) AS customers FROM customers GROUP BY 1 ORDER BY 2 DESC"""
TIER_CHANGES = f"""
SELECT {_bin("changed_at")}, direction || ' ' || coalesce(to_tier, '?') AS series, count(*) AS value
FROM tier_changes WHERE changed_at >= %(since)s GROUP BY 1, 2"""
TIER_MOVES = """
SELECT coalesce(from_tier, '(none)') AS from_tier, coalesce(to_tier, '(none)') AS to_tier,
       direction, count(*) AS changes
FROM tier_changes WHERE changed_at >= %(since)s GROUP BY 1, 2, 3 ORDER BY changes DESC"""


def tiers(conn: psycopg.Connection, rng: Range) -> Page:
    p = _params(conn, rng)
    dist = _rows(conn, TIER_DISTRIBUTION, p)
    moves = _rows(conn, TIER_MOVES, p)
    for row in moves:
        row["move"] = f"{row['from_tier']} -> {row['to_tier']}"
    ups = sum(r["changes"] for r in moves if r["direction"] == "TIER_UPGRADE")
    downs = sum(r["changes"] for r in moves if r["direction"] == "TIER_DOWNGRADE")
    return {
        "stats": [
            stat("customers", "customers", sum(r["customers"] for r in dist)),
            stat("upgrades", "upgrades", ups),
            stat("downgrades", "downgrades", downs),
        ],
        "panels": [
            category_panel(
                "tier_distribution", "Customers per tier (now)", dist, "tier", ["customers"], "doughnut"
            ),
            series_panel(
                "tier_changes",
                f"Tier changes per {rng.bucket_label}",
                _rows(conn, TIER_CHANGES, p),
                rng.buckets(p["now"]),
            ),
            category_panel(
                "tier_moves", "Moves between tiers", moves, "move", ["changes"], extra=["direction"]
            ),
        ],
    }


# ---------------------------------------------------------------- audiences

AUDIENCE_SIZES = "SELECT audience_id AS audience, count(*) AS members FROM audience_members GROUP BY 1"
AUDIENCE_MOVES = f"""
SELECT {_bin("at")}, audience_id AS audience, action, count(*) AS value
FROM audience_membership_events WHERE at >= %(since)s GROUP BY 1, 2, 3"""


def _sizes_over_time(sizes: dict[str, int], moves: list[dict], buckets: list[datetime]) -> list[dict]:
    """Size at the end of each bucket: today's size minus the net entries of every later bucket."""
    net: dict[tuple[str, datetime], int] = {}
    for m in moves:
        sign = 1 if m["action"] == "ENTER" else -1
        net[(m["audience"], m["bucket"])] = net.get((m["audience"], m["bucket"]), 0) + sign * m["value"]
    rows = []
    for audience, size in sizes.items():
        for bucket in reversed(buckets):
            rows.append({"bucket": bucket, "series": audience, "value": size})
            size -= net.get((audience, bucket), 0)
    return rows


def audiences(conn: psycopg.Connection, rng: Range) -> Page:
    p = _params(conn, rng)
    buckets = rng.buckets(p["now"])
    moves = _rows(conn, AUDIENCE_MOVES, p)
    sizes = {r["audience"]: r["members"] for r in _rows(conn, AUDIENCE_SIZES, p)}
    for audience in {m["audience"] for m in moves} - set(sizes):
        sizes[audience] = 0
    per: dict[str, dict[str, Any]] = {
        a: {"audience": a, "members": n, "enters": 0, "leaves": 0} for a, n in sorted(sizes.items())
    }
    for m in moves:
        per[m["audience"]]["enters" if m["action"] == "ENTER" else "leaves"] += m["value"]
    flow = [
        {"bucket": m["bucket"], "series": f"{m['audience']} {m['action']}", "value": m["value"]}
        for m in moves
    ]
    size_panel = series_panel(
        "audience_sizes",
        f"Audience size (end of each {rng.bucket_label})",
        _sizes_over_time(sizes, moves, buckets),
        buckets,
        "line",
    )
    size_panel["table"]["rows"] = size_panel["table"]["rows"][:1]  # the size now; the chart has the rest
    return {
        "stats": [
            stat("audiences", "audiences", len(per)),
            stat("members", "members now", sum(sizes.values())),
            stat("enters", "enters", sum(r["enters"] for r in per.values())),
            stat("leaves", "leaves", sum(r["leaves"] for r in per.values())),
        ],
        "panels": [
            category_panel(
                "audience_summary",
                "Members now, enters and leaves in range",
                list(per.values()),
                "audience",
                ["members", "enters", "leaves"],
            ),
            size_panel,
            series_panel("audience_flow", f"Enters and leaves per {rng.bucket_label}", flow, buckets),
        ],
    }


# ---------------------------------------------------------------- journeys

JOURNEY_FUNNEL = """
SELECT journey_id AS journey, count(*) AS entered,
       count(*) FILTER (WHERE status = 'ACTIVE') AS waiting,
       count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
       count(*) FILTER (WHERE status = 'EXITED') AS exited
FROM journey_instances WHERE entered_at >= %(since)s GROUP BY 1 ORDER BY 1"""
JOURNEY_NODES = """
SELECT journey_id || ' / ' || coalesce(current_node, '(none)') AS node, journey_id AS journey,
       count(*) AS waiting
FROM journey_instances WHERE entered_at >= %(since)s AND status = 'ACTIVE'
GROUP BY 1, 2 ORDER BY waiting DESC, node LIMIT 30"""


def journeys(conn: psycopg.Connection, rng: Range) -> Page:
    p = _params(conn, rng)
    funnel = _rows(conn, JOURNEY_FUNNEL, p)
    for row in funnel:
        row["completion_pct"] = round(100 * row["completed"] / row["entered"], 2) if row["entered"] else 0
    total = {k: sum(r[k] for r in funnel) for k in ("entered", "waiting", "completed", "exited")}
    return {
        "stats": [stat(k, k, v) for k, v in total.items()],
        "panels": [
            category_panel(
                "journey_funnel",
                "Funnel per journey (instances entered in range)",
                funnel,
                "journey",
                ["entered", "waiting", "completed", "exited"],
                extra=["completion_pct"],
            ),
            category_panel(
                "journey_nodes",
                "Waiting instances per node",
                _rows(conn, JOURNEY_NODES, p),
                "node",
                ["waiting"],
                extra=["journey"],
            ),
        ],
    }


# ---------------------------------------------------------------- webhooks

WEBHOOK_ENDPOINTS = """
SELECT endpoint_id AS endpoint, count(*) AS attempts,
       count(*) FILTER (WHERE outcome = 'DELIVERED') AS delivered,
       count(*) FILTER (WHERE outcome = 'RETRY') AS retries,
       count(*) FILTER (WHERE outcome = 'DLQ') AS dead,
       count(*) FILTER (WHERE outcome = 'DISABLED') AS disabled,
       coalesce(round(100 * (count(*) FILTER (WHERE outcome = 'DELIVERED'))::numeric
             / nullif(count(*) FILTER (WHERE outcome IN ('DELIVERED', 'DLQ', 'DISABLED')), 0), 2), 0)
           AS success_pct,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)::numeric, 1) AS p50_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)::numeric, 1) AS p95_ms
FROM webhook_deliveries WHERE at >= %(since)s GROUP BY 1 ORDER BY attempts DESC"""
WEBHOOK_OUTCOMES = f"""
SELECT {_bin("at")}, outcome AS series, count(*) AS value
FROM webhook_deliveries WHERE at >= %(since)s GROUP BY 1, 2"""
WEBHOOK_LATENCY = f"""
SELECT {_bin("at")}, 'p95 ms' AS series,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS value
FROM webhook_deliveries WHERE at >= %(since)s AND latency_ms IS NOT NULL GROUP BY 1
UNION ALL
SELECT {_bin("at")}, 'p50 ms', percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)
FROM webhook_deliveries WHERE at >= %(since)s AND latency_ms IS NOT NULL GROUP BY 1"""
WEBHOOK_OVERALL = """
SELECT count(*) AS attempts,
       count(*) FILTER (WHERE outcome = 'DELIVERED') AS delivered,
       count(*) FILTER (WHERE outcome IN ('DELIVERED', 'DLQ', 'DISABLED')) AS finished,
       count(*) FILTER (WHERE outcome = 'RETRY') AS retries,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95
FROM webhook_deliveries WHERE at >= %(since)s"""
DEAD_LETTERS = """
SELECT event, endpoint_id AS endpoint, customer_id, attempt, last_error, dead_at
FROM dlq WHERE dead_at >= %(since)s ORDER BY dead_at DESC LIMIT 50"""
DEAD_COUNT = "SELECT count(*) AS n FROM dlq WHERE dead_at >= %(since)s"
DISABLED = """
SELECT endpoint_id AS endpoint, count(*) AS disabled_attempts, max(at) AS last_at
FROM webhook_deliveries WHERE at >= %(since)s AND outcome = 'DISABLED' GROUP BY 1 ORDER BY last_at DESC"""


def webhooks(conn: psycopg.Connection, rng: Range) -> Page:
    p = _params(conn, rng)
    buckets = rng.buckets(p["now"])
    o = conn.execute(WEBHOOK_OVERALL, p).fetchone()
    disabled = _rows(conn, DISABLED, p)
    rate = o["delivered"] / o["finished"] if o["finished"] else 0
    return {
        "stats": [
            stat("attempts", "attempts", o["attempts"]),
            stat("success_rate", "success rate %", round(100 * rate, 2)),
            stat("p50_ms", "latency p50 ms", round(o["p50"] or 0, 1)),
            stat("p95_ms", "latency p95 ms", round(o["p95"] or 0, 1)),
            stat("retries", "retries", o["retries"]),
            stat("dead_letters", "dead letters", conn.execute(DEAD_COUNT, p).fetchone()["n"]),
            stat("disabled_endpoints", "disabled endpoints", len(disabled)),
        ],
        "panels": [
            category_panel(
                "webhook_endpoints",
                "Per endpoint",
                _rows(conn, WEBHOOK_ENDPOINTS, p),
                "endpoint",
                ["delivered", "retries", "dead", "disabled"],
                extra=["attempts", "success_pct", "p50_ms", "p95_ms"],
            ),
            series_panel(
                "webhook_outcomes",
                f"Attempts per {rng.bucket_label} by outcome",
                _rows(conn, WEBHOOK_OUTCOMES, p),
                buckets,
            ),
            series_panel(
                "webhook_latency",
                f"Latency per {rng.bucket_label}",
                _rows(conn, WEBHOOK_LATENCY, p),
                buckets,
                "line",
                total=False,
            ),
            table_panel(
                "dead_letters",
                "Dead letters (latest 50)",
                _rows(conn, DEAD_LETTERS, p),
                ["dead_at", "event", "endpoint", "customer_id", "attempt", "last_error"],
            ),
            table_panel(
                "disabled_endpoints",
                "Disabled endpoints",
                disabled,
                ["endpoint", "disabled_attempts", "last_at"],
            ),
        ],
    }


# ---------------------------------------------------------------- segments

# The product docs' segments (docs/dashboard.md), the definitions of v_behavior_segments.
# From the snapshot dashboard_segments (kept by dashboard.rollups) when it is populated, else
# computed now over every event. `active` = the member had an event in the selected range.
PER_CUSTOMER = """
SELECT e.customer_id,
       count(*) FILTER (WHERE e.issued_at >= now() - interval '30 days') >= 10 AS high_engager,
       bool_or(e.type = 'PURCHASE' AND e.status IN ('RESOLVED', 'PENDING')) AS purchaser,
       bool_or(e.type LIKE '%%REFERRAL%%' OR e.type LIKE '%%REVIEW%%') AS advocate,
       max(e.issued_at) < now() - interval '30 days' AS at_risk,
       max(e.issued_at) AS last_event_at, coalesce(max(w.points), 0) AS points, max(w.tier) AS tier
FROM events e LEFT JOIN wallets w USING (customer_id) WHERE e.kind = 'EVENT' GROUP BY e.customer_id"""
SEGMENT_ORDER = ("high_engager", "purchaser", "advocate", "at_risk")
SEGMENT_COUNTS = ", ".join(
    f"count(*) FILTER (WHERE {s}) AS {s},"
    f" count(*) FILTER (WHERE {s} AND last_event_at >= %(since)s) AS {s}_active"
    for s in SEGMENT_ORDER
)


def segments(conn: psycopg.Connection, rng: Range) -> Page:
    p = _params(conn, rng)
    source = "dashboard_segments" if p["segments_at"] else f"({PER_CUSTOMER})"
    counts = conn.execute(f"SELECT {SEGMENT_COUNTS} FROM {source} s", p).fetchone()
    rows = [
        {"segment": s, "customers": counts[s], "active_in_range": counts[f"{s}_active"]}
        for s in SEGMENT_ORDER
    ]
    at_risk = _rows(
        conn,
        f"SELECT customer_id, points, tier, last_event_at FROM {source} s WHERE at_risk "
        "ORDER BY points DESC, customer_id LIMIT 20",
        p,
    )
    as_of = (p["segments_at"] or p["now"]).strftime("%H:%M:%S UTC")
    return {
        "stats": [stat(r["segment"], r["segment"].replace("_", " "), r["customers"]) for r in rows]
        + [stat("as_of", "as of", as_of)],
        "panels": [
            category_panel(
                "segment_sizes",
                "Customers per segment (active = an event in range)",
                rows,
                "segment",
                ["customers", "active_in_range"],
            ),
            table_panel(
                "at_risk_top",
                "At risk, most points to win back",
                at_risk,
                ["customer_id", "points", "tier", "last_event_at"],
            ),
        ],
    }


# ---------------------------------------------------------------- customer lookup

CUSTOMER = """
SELECT customer_id, anonymous, identified, tier, purchase_count, total_spend, last_purchase_at,
       event_count, first_seen, last_event_at, lifetime_points, registered_at, rfm_score, updated_at
FROM customers WHERE customer_id = %(id)s"""
WALLET = """
SELECT customer_id, points, lifetime, pending, tier, balance::text AS balance, updated_at
FROM wallets WHERE customer_id = %(id)s"""
LEDGER = """
SELECT issued_at, kind, amount, reward_id, campaign_id, rule, event_id, expiration_date
FROM ledger_lines WHERE customer_id = %(id)s AND issued_at >= %(since)s
ORDER BY issued_at DESC LIMIT 100"""
EVENTS = """
SELECT issued_at, id, type, kind, path, status, reason, points, reference
FROM events WHERE customer_id = %(id)s AND issued_at >= %(since)s ORDER BY issued_at DESC LIMIT 100"""
TIER_HISTORY = """
SELECT changed_at, direction, from_tier, to_tier FROM tier_changes
WHERE customer_id = %(id)s ORDER BY changed_at DESC LIMIT 100"""
CUSTOMER_AUDIENCES = """
SELECT audience_id, entered_at, reason FROM audience_members
WHERE customer_id = %(id)s ORDER BY audience_id"""
CUSTOMER_JOURNEYS = """
SELECT journey_id, instance_id, status, current_node, entered_at, ended_at
FROM journey_instances WHERE customer_id = %(id)s ORDER BY entered_at DESC NULLS LAST LIMIT 100"""
POINTS_HISTORY = f"""
SELECT {_bin("issued_at")}, {POINTS_KIND} AS series, sum(abs(amount)) AS value
FROM ledger_lines WHERE customer_id = %(id)s AND issued_at >= %(since)s
  AND kind IN ('ACCUMULATION', 'REDEMPTION', 'EXPIRY') GROUP BY 1, 2"""


def _pairs(row: dict | None) -> list[dict]:
    return [{"field": k, "value": v} for k, v in (row or {}).items()]


def customer(conn: psycopg.Connection, rng: Range, customer_id: str) -> Page:
    """One customer's whole picture; `found` is false when no table knows the id."""
    p = _params(conn, rng, id=customer_id)
    profile, wallet = conn.execute(CUSTOMER, p).fetchone(), conn.execute(WALLET, p).fetchone()
    events = _rows(conn, EVENTS, p)
    ledger = _rows(conn, LEDGER, p)
    tier_history = _rows(conn, TIER_HISTORY, p)
    member_of, journeys_in = _rows(conn, CUSTOMER_AUDIENCES, p), _rows(conn, CUSTOMER_JOURNEYS, p)
    found = bool(profile or wallet or events or ledger)
    return {
        "customer_id": customer_id,
        "found": found,
        "stats": [
            stat("points", "points", (wallet or {}).get("points")),
            stat("tier", "tier", (wallet or profile or {}).get("tier") or "-"),
            stat("events_in_range", "events in range", len(events)),
            stat("audiences", "audiences", len(member_of)),
        ],
        "panels": [
            series_panel(
                "customer_points",
                f"Points per {rng.bucket_label}",
                _rows(conn, POINTS_HISTORY, p),
                rng.buckets(p["now"]),
                "bar",
                total=False,
            ),
            table_panel("profile", "Profile", _pairs(profile), ["field", "value"]),
            table_panel("wallet", "Wallet", _pairs(wallet), ["field", "value"]),
            table_panel(
                "ledger",
                "Ledger (in range, latest 100)",
                ledger,
                ["issued_at", "kind", "amount", "reward_id", "campaign_id", "rule", "event_id"],
            ),
            table_panel(
                "events",
                "Events (in range, latest 100)",
                events,
                ["issued_at", "type", "status", "reason", "points", "path", "reference", "id"],
            ),
            table_panel(
                "tier_history",
                "Tier history",
                tier_history,
                ["changed_at", "direction", "from_tier", "to_tier"],
            ),
            table_panel(
                "customer_audiences", "Audiences", member_of, ["audience_id", "entered_at", "reason"]
            ),
            table_panel(
                "customer_journeys",
                "Journeys",
                journeys_in,
                ["journey_id", "status", "current_node", "entered_at", "ended_at", "instance_id"],
            ),
        ],
    }


PAGES = {
    "overview": overview,
    "campaigns": campaigns,
    "tiers": tiers,
    "audiences": audiences,
    "journeys": journeys,
    "webhooks": webhooks,
    "segments": segments,
}
