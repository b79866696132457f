"""A known synthetic load written straight into the sink's tables with generate_series.

Used by the browser tests (small) and bench/dashboard.py (millions of rows). Every row is a pure
function of its index, so a run is reproducible; times count back from the database's now() in
steps of `gap` seconds, offset by half a step, so with a gap that divides an hour no row sits on a
range boundary (1h, 24h, 7d, 30d) while a test reads. Customers 1..90% get the recent 75% of the
events and the rest only the oldest 25%, so with a long enough span some customers are at risk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

TYPES = "ARRAY['PURCHASE','PAGE_VIEW','APP_OPEN','PRODUCT_REVIEW','REFERRAL','ADD_TO_CART','PURCHASE']"
CAMPAIGNS = "ARRAY['base','summer-double','welcome']"
REASONS = "ARRAY['budget exhausted','condition false','outside schedule','limit reached']"
TIERS = "ARRAY['bronze','bronze','bronze','bronze','silver','silver','silver','gold','gold','platinum']"


@dataclass(frozen=True)
class Load:
    customers: int = 200
    events: int = 3000
    gap_s: float = 1200  # seconds between consecutive events (3000 x 20 min = 41.7 days)
    webhooks: int = 600

    @property
    def recent(self) -> int:
        """Customers 1..recent receive the newest 75% of events."""
        return max(1, self.customers * 9 // 10)


def _customer(load: Load) -> str:
    late = load.customers - load.recent
    tail = f"{load.recent} + 1 + (g % {max(1, late)})" if late else "1 + (g % 1)"
    return f"'c' || CASE WHEN g <= {load.events * 3 // 4} THEN 1 + (g % {load.recent}) ELSE {tail} END"


def _events(load: Load) -> str:
    at = f"now() - make_interval(secs => (g - 0.5) * {load.gap_s})"
    status = """CASE WHEN h % 20 = 0 THEN 'REJECTED' WHEN h % 20 = 1 THEN 'FAILED'
                     WHEN type = 'PAGE_VIEW' THEN 'TRACKED' ELSE 'RESOLVED' END"""
    skipped = f"""CASE WHEN g % 5 = 0 THEN jsonb_build_array(jsonb_build_object(
                    'campaign_id', ({CAMPAIGNS})[1 + g % 3], 'reason', ({REASONS})[1 + g % 4],
                    'failed', false))
                  ELSE '[]'::jsonb END"""
    return f"""
INSERT INTO events (id, customer_id, type, kind, path, reference, status, reason, points, result,
                    properties, issued_at, received_at, processed_at, sends)
SELECT 'e' || g, customer_id, type, 'EVENT', CASE WHEN type = 'PAGE_VIEW' THEN 'tracking' ELSE 'loyalty' END,
       'ref-' || g, {status}, CASE WHEN h % 20 = 0 THEN 'RULE_REJECTED' END,
       CASE WHEN {status} = 'RESOLVED' THEN 10 + g % 50 ELSE 0 END,
       jsonb_build_object('status', {status}, 'rules_skipped', {skipped}),
       jsonb_build_object('amount', 5 + g % 200), at, at, at + interval '1 second', 1
FROM (SELECT g, g + g / {load.recent} AS h, {_customer(load)} AS customer_id, ({TYPES})[1 + g % 7] AS type,
             {at} AS at
      FROM generate_series(1, {load.events}) AS g) s"""


LEDGER = f"""
INSERT INTO ledger_lines (id, customer_id, event_id, kind, reward_id, campaign_id, rule, amount,
                          issued_at, processed_at)
SELECT id || ':acc', customer_id, id, 'ACCUMULATION', 'POINTS', ({CAMPAIGNS})[1 + n % 3],
       ({CAMPAIGNS})[1 + n % 3], points, issued_at, processed_at
FROM (SELECT *, substr(id, 2)::bigint AS n FROM events WHERE status = 'RESOLVED') e
UNION ALL
SELECT id || ':red', customer_id, id, 'REDEMPTION', 'POINTS', NULL, NULL, -(5 + n % 20),
       issued_at, processed_at
FROM (SELECT *, substr(id, 2)::bigint AS n FROM events WHERE status = 'RESOLVED') e WHERE n % 11 = 0
UNION ALL
SELECT id || ':exp', customer_id, id, 'EXPIRY', 'POINTS', 'base', 'base', 3 + n % 7, issued_at, processed_at
FROM (SELECT *, substr(id, 2)::bigint AS n FROM events WHERE status = 'RESOLVED') e WHERE n % 13 = 0"""

# campaign_budgets as the sink keeps it: summer-double has spent its whole budget (exhausted when
# its last line was credited), welcome about 60% of its budget; base has no budget (no row)
CAMPAIGN_BUDGETS = """
INSERT INTO campaign_budgets (campaign_id, reward_id, budget, spent, remaining, exhausted_at, updated_at)
SELECT campaign_id, 'POINTS', budget, spent, budget - spent,
       CASE WHEN budget = spent THEN last_at END, last_at
FROM (SELECT campaign_id, sum(amount) AS spent, max(processed_at) AS last_at,
             CASE campaign_id WHEN 'summer-double' THEN sum(amount)
                  ELSE ceil(sum(amount) * 1.6 / 100) * 100 END AS budget
      FROM ledger_lines WHERE kind = 'ACCUMULATION' AND campaign_id IN ('summer-double', 'welcome')
      GROUP BY 1) s"""

CUSTOMERS = f"""
INSERT INTO customers (customer_id, anonymous, identified, tier, purchase_count, total_spend, event_count,
                       last_event_at, first_seen, last_purchase_at, events_by_type, sequence, updated_at)
SELECT customer_id, n % 17 = 0, n % 17 <> 0, ({TIERS})[1 + n % 10],
       count(*) FILTER (WHERE type = 'PURCHASE'), sum((properties->>'amount')::float)
           FILTER (WHERE type = 'PURCHASE'),
       count(*), max(issued_at), min(issued_at), max(issued_at) FILTER (WHERE type = 'PURCHASE'),
       '{{}}'::jsonb, 1, now()
FROM (SELECT *, substr(customer_id, 2)::bigint AS n FROM events) e GROUP BY customer_id, n"""

WALLETS = """
INSERT INTO wallets (customer_id, points, lifetime, pending, tier, sequence, updated_at)
SELECT c.customer_id, coalesce(l.points, 0), coalesce(l.lifetime, 0), 0, c.tier, 1, now()
FROM customers c LEFT JOIN (
    SELECT customer_id,
           sum(CASE kind WHEN 'EXPIRY' THEN -amount ELSE amount END) AS points,
           sum(amount) FILTER (WHERE kind = 'ACCUMULATION') AS lifetime
    FROM ledger_lines GROUP BY customer_id) l USING (customer_id)"""

TIER_CHANGES = """
INSERT INTO tier_changes (id, customer_id, direction, from_tier, to_tier, changed_at)
SELECT 'tc-' || customer_id, customer_id,
       CASE WHEN n % 5 = 0 THEN 'TIER_DOWNGRADE' ELSE 'TIER_UPGRADE' END,
       CASE WHEN n % 5 = 0 THEN 'platinum'
            ELSE (ARRAY[NULL, 'bronze', 'silver', 'gold'])[
                array_position(ARRAY['bronze', 'silver', 'gold', 'platinum'], tier)]
       END, tier,
       now() - make_interval(secs => (n - 0.5) * 3600)
FROM (SELECT *, substr(customer_id, 2)::bigint AS n FROM customers) c WHERE n % 3 = 0"""

AUDIENCE_EVENTS = """
INSERT INTO audience_membership_events (id, audience_id, customer_id, action, reason, at)
SELECT 'am-' || a || '-' || customer_id || '-' || action, a, customer_id, action, 'seed',
       now() - make_interval(secs => (n * 2 - CASE action WHEN 'ENTER' THEN 0 ELSE 1 END - 0.5) * 1800)
FROM (SELECT *, substr(customer_id, 2)::bigint AS n FROM customers) c,
     unnest(ARRAY['vip', 'engaged', 'cart']) AS a,
     unnest(ARRAY['ENTER', 'LEAVE']) AS action
WHERE ((a = 'vip' AND n % 4 = 0) OR (a = 'engaged' AND n % 2 = 0) OR (a = 'cart' AND n % 5 = 0))
  AND (action = 'ENTER' OR n % 3 = 0)"""

AUDIENCE_MEMBERS = """
INSERT INTO audience_members (audience_id, customer_id, entered_at, reason)
SELECT audience_id, customer_id, max(at), 'seed' FROM audience_membership_events
GROUP BY 1, 2 HAVING NOT bool_or(action = 'LEAVE')"""

JOURNEYS = """
INSERT INTO journey_instances (instance_id, journey_id, customer_id, status, current_node, entered_at,
                               ended_at, updated_at)
SELECT 'ji-' || customer_id || '-' || j, j, customer_id,
       (ARRAY['ACTIVE','COMPLETED','EXITED','COMPLETED'])[1 + n % 4],
       CASE WHEN n % 4 = 0 THEN (ARRAY['wait-1d','send-email','wait-3d'])[1 + n % 3] END,
       now() - make_interval(secs => (n - 0.5) * 3600),
       CASE WHEN n % 4 <> 0 THEN now() - make_interval(secs => (n - 0.5) * 3000) END, now()
FROM (SELECT *, substr(customer_id, 2)::bigint AS n FROM customers) c,
     unnest(ARRAY['cart-abandonment', 'vip-welcome']) AS j
WHERE (j = 'cart-abandonment' AND n % 2 = 0) OR (j = 'vip-welcome' AND n % 3 = 0)"""


def _webhooks(load: Load) -> str:
    outcome = "(ARRAY['RETRY','RETRY','DLQ','DISABLED'])[g % 10 - 5]"
    outcome = f"CASE WHEN g % 10 < 6 THEN 'DELIVERED' ELSE {outcome} END"
    endpoint = "CASE WHEN g % 10 = 9 THEN 'ep-broken' ELSE (ARRAY['ep-crm','ep-email'])[1 + g % 2] END"
    return f"""
INSERT INTO webhook_deliveries (webhook_id, endpoint_id, attempt, event, customer_id, status_code,
                                latency_ms, outcome, error, at)
SELECT 'wh-' || g, {endpoint}, 1 + g % 3, 'CUSTOMER_ACCUMULATION', 'c' || (1 + g % {load.customers}),
       CASE WHEN {outcome} = 'DELIVERED' THEN 200 ELSE 503 END, 20 + (g * 37) % 400, {outcome},
       CASE WHEN {outcome} <> 'DELIVERED' THEN 'HTTP 503' END,
       now() - make_interval(secs => (g - 0.5) * {max(60, load.events * load.gap_s // max(1, load.webhooks))})
FROM generate_series(1, {load.webhooks}) AS g"""


DLQ = """
INSERT INTO dlq (id, endpoint_id, event, customer_id, created_at, attempt, last_error, dead_at)
SELECT webhook_id, endpoint_id, event, customer_id, at, attempt, error, at + interval '1 second'
FROM webhook_deliveries WHERE outcome = 'DLQ'"""


def seed(conn: psycopg.Connection, load: Load) -> None:
    """Write the load into empty sink tables (one transaction), then ANALYZE them."""
    with conn.transaction():
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        for sql in (
            _events(load),
            LEDGER,
            CAMPAIGN_BUDGETS,
            CUSTOMERS,
            WALLETS,
            TIER_CHANGES,
            AUDIENCE_EVENTS,
            AUDIENCE_MEMBERS,
            JOURNEYS,
            _webhooks(load),
            DLQ,
        ):
            conn.execute(sql)
    conn.execute("ANALYZE")


@contextmanager
def fresh_database(server_url: str, prefix: str = "dash") -> Iterator[str]:
    """A new database on the server of `server_url`, migrated to head; dropped afterwards."""
    from sinks.migrate import scratch_database  # alembic is loaded only for a seed of its own

    with scratch_database(server_url, prefix) as url:
        yield url
