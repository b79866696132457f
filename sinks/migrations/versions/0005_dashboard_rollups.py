"""Hourly rollups and a segment snapshot, kept by the dashboard (dashboard/rollups.py).

The 7-day and 30-day charts would otherwise aggregate millions of rows on every refresh. The
dashboard rebuilds the last 3 days of hours every minute (late rows and status changes land
there) and the segment snapshot every 5 minutes; pages read complete hours from here and the
rest of their window from the raw tables, so the figures stay exact up to one refresh.
Nothing else writes these tables; dropping them only makes the long ranges slower.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UP = """
CREATE TABLE dashboard_event_hours (
    hour timestamptz NOT NULL,
    type text NOT NULL,
    outcome text NOT NULL,
    events bigint NOT NULL,
    PRIMARY KEY (hour, type, outcome)
);
CREATE TABLE dashboard_ledger_hours (
    hour timestamptz NOT NULL,
    kind text NOT NULL,
    campaign_id text NOT NULL,
    amount double precision NOT NULL,
    lines bigint NOT NULL,
    PRIMARY KEY (hour, kind, campaign_id)
);
CREATE TABLE dashboard_skip_hours (
    hour timestamptz NOT NULL,
    campaign_id text NOT NULL,
    reason text NOT NULL,
    skips bigint NOT NULL,
    PRIMARY KEY (hour, campaign_id, reason)
);
CREATE TABLE dashboard_rollup_state (
    name text PRIMARY KEY,
    built_at timestamptz NOT NULL,
    seconds double precision
);
CREATE MATERIALIZED VIEW dashboard_segments AS
SELECT s.*, coalesce(w.points, 0) AS points, w.tier
FROM (
    SELECT e.customer_id,
           count(*) FILTER (WHERE e.issued_at >= now() - interval '30 days') >= 10 AS high_engager,
           bool_or(e.type = 'PURCHASE' AND e.status IN ('RESOLVED', 'PENDING')) AS purchaser,
           bool_or(e.type LIKE '%REFERRAL%' OR e.type LIKE '%REVIEW%') AS advocate,
           max(e.issued_at) < now() - interval '30 days' AS at_risk,
           max(e.issued_at) AS last_event_at
    FROM events e WHERE e.kind = 'EVENT'
    GROUP BY e.customer_id
) s LEFT JOIN wallets w USING (customer_id)
WITH NO DATA;
CREATE UNIQUE INDEX dashboard_segments_customer ON dashboard_segments (customer_id);
"""

DOWN = """
DROP MATERIALIZED VIEW IF EXISTS dashboard_segments;
DROP TABLE IF EXISTS dashboard_rollup_state, dashboard_skip_hours, dashboard_ledger_hours,
    dashboard_event_hours;
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
