"""Drop three indexes that are a prefix of another index on the same table.

events_customer_issued (customer_id, issued_at), ledger_lines_customer (customer_id, issued_at)
and tier_changes_customer (customer_id, changed_at) are each the leading columns of the
history API's keyset index added by 0006_history_indexes (..., id): that one serves every
query the shorter one did, while the sink paid one more index entry per row written (and per
non-HOT update of an events row). The sink benchmark's PostgreSQL CPU per row: docs/benchmarks.md.

Revision ID: 0012_drop_prefix_indexes
Revises: 0011_merge_heads
Create Date: 2026-12-01
"""

from alembic import op

revision = "0012_drop_prefix_indexes"
down_revision = "0011_merge_heads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS events_customer_issued, ledger_lines_customer, tier_changes_customer")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS events_customer_issued ON events (customer_id, issued_at);"
        "CREATE INDEX IF NOT EXISTS ledger_lines_customer ON ledger_lines (customer_id, issued_at);"
        "CREATE INDEX IF NOT EXISTS tier_changes_customer ON tier_changes (customer_id, changed_at)"
    )
