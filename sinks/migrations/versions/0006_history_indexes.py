"""Indexes of the customer history API (GET /customers/{id}/events, /ledger, /tiers).

Each page reads one customer's rows newest first from a keyset cursor (issued_at, id): with the
id in the index the cursor's row comparison and the ORDER BY ... LIMIT are one backward index
range scan, whatever the customer's history size (bench/history.py, docs/benchmarks.md).

Revision ID: 0006_history_indexes
Revises: 0003
Create Date: 2026-12-01
"""

from alembic import op

revision = "0006_history_indexes"
down_revision = "0003"
branch_labels = None
depends_on = None

UP = """
CREATE INDEX IF NOT EXISTS events_customer_issued_id ON events (customer_id, issued_at, id);
CREATE INDEX IF NOT EXISTS ledger_lines_customer_issued_id ON ledger_lines (customer_id, issued_at, id);
CREATE INDEX IF NOT EXISTS tier_changes_customer_changed_id ON tier_changes (customer_id, changed_at, id);
"""

DOWN = """
DROP INDEX IF EXISTS events_customer_issued_id, ledger_lines_customer_issued_id,
    tier_changes_customer_changed_id;
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
