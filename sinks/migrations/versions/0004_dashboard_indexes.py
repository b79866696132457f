"""Indexes the dashboard's time-ranged pages read through (docs/dashboard.md, bench/dashboard.py).

Each page filters one table on a timestamp; without these, every refresh of a 1-hour chart would
scan the whole table. INCLUDE columns let the overview and campaign charts run as index-only
scans (the aggregated columns come from the index, not the heap).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UP = """
CREATE INDEX IF NOT EXISTS events_issued_at ON events (issued_at) INCLUDE (kind, type, status);
CREATE INDEX IF NOT EXISTS events_rules_skipped ON events (issued_at)
    WHERE result->'rules_skipped' <> '[]'::jsonb;
CREATE INDEX IF NOT EXISTS ledger_lines_issued_at ON ledger_lines (issued_at)
    INCLUDE (kind, amount, campaign_id);
CREATE INDEX IF NOT EXISTS customers_last_event_at ON customers (last_event_at);
CREATE INDEX IF NOT EXISTS customers_tier ON customers (tier);
CREATE INDEX IF NOT EXISTS tier_changes_changed_at ON tier_changes (changed_at);
CREATE INDEX IF NOT EXISTS audience_membership_events_at ON audience_membership_events (at);
CREATE INDEX IF NOT EXISTS journey_instances_entered_at ON journey_instances (entered_at)
    INCLUDE (journey_id, status);
CREATE INDEX IF NOT EXISTS journey_instances_customer ON journey_instances (customer_id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_at ON webhook_deliveries (at);
CREATE INDEX IF NOT EXISTS dlq_dead_at ON dlq (dead_at);
CREATE INDEX IF NOT EXISTS audience_members_customer ON audience_members (customer_id);
"""

DOWN = """
DROP INDEX IF EXISTS events_issued_at, events_rules_skipped, ledger_lines_issued_at,
    customers_last_event_at, customers_tier, tier_changes_changed_at, audience_membership_events_at,
    journey_instances_entered_at, journey_instances_customer, webhook_deliveries_at, dlq_dead_at,
    audience_members_customer;
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
