"""customer_badges: the badges each customer holds (issue 15), one row per customer and badge.

Written by the sink from the loyalty results' `badges` changes (an award or a revocation), the
latest per-customer `sequence` winning. `count` is how many times it is held (a repeatable
achievement awards it again); a revoked badge keeps its row with `count` 0 and `revoked_at`.

Revision ID: 0007_customer_badges
Revises: 0006_history_indexes
Create Date: 2026-12-01
"""

from alembic import op

revision = "0007_customer_badges"
down_revision = "0006_history_indexes"
branch_labels = None
depends_on = None

UP = """
CREATE TABLE customer_badges (
    customer_id text NOT NULL,
    badge_id text NOT NULL,
    badge_name text,
    count integer NOT NULL DEFAULT 0,
    first_awarded_at timestamptz,
    awarded_at timestamptz,
    revoked_at timestamptz,
    trigger_event_id text,
    trigger_event_type text,
    achievement_id text,
    campaign_id text,
    sequence bigint,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (customer_id, badge_id)
);
"""

DOWN = "DROP TABLE customer_badges;"


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
