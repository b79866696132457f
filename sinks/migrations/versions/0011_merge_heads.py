"""Merge the five branches into one head (issue 18 item 4), so `upgrade head` works again.

The branches grew off 0003 side by side (admin audit, dashboard rollups, history indexes,
event times, ...); they touch different tables, so the merge changes nothing. A database at
every head (what `sinks.migrate.upgrade`, i.e. `upgrade heads`, left) moves here with no DDL;
one at an older revision takes the missing branches first. New revisions go off this one.

Revision ID: 0011_merge_heads
Revises: 0005_admin_audit, 0005, 0007_customer_badges, 0010_campaign_budgets,
    0010_customer_merged_into
Create Date: 2026-12-01
"""

revision = "0011_merge_heads"
down_revision = (
    "0005_admin_audit",
    "0005",
    "0007_customer_badges",
    "0010_campaign_budgets",
    "0010_customer_merged_into",
)
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
