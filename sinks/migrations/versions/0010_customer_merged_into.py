"""customers.merged_into: an anonymous customer merged into a known id (issue 16 item 4).

The anonymous id's rows (events, ledger, wallet, profile) stay as its history; the profile the
loyalty processor writes when it seals the anonymous customer names the known id, which the sink
stores here (null for every other customer).

Revision ID: 0010_customer_merged_into
Revises: 0009_leaderboard_buckets
Create Date: 2026-12-01
"""

from alembic import op

revision = "0010_customer_merged_into"
down_revision = "0009_leaderboard_buckets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE customers ADD COLUMN IF NOT EXISTS merged_into text")
    op.execute(
        "CREATE INDEX IF NOT EXISTS customers_merged_into ON customers (merged_into) "
        "WHERE merged_into IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS customers_merged_into")
    op.execute("ALTER TABLE customers DROP COLUMN IF EXISTS merged_into")
