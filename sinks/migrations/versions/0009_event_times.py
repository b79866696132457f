"""events: the time of each lifecycle transition (issue 16), not only the latest result's.

`processing_at` (first processed), `resolved_at` (RESOLVED, FAILED or REJECTED), `cancelled_at`,
`expired_at`, `reversed_at`, as Masivo names them. The sink fills them from each result's
`times` (the processor keeps every transition's time; schemas/event_times.py) and keeps a
time once known, so an event RESOLVED and then REVERSED has both. Rows written before this
migration keep null for the times of transitions they had already passed.

Revision ID: 0009_event_times
Revises: 0003
Create Date: 2026-12-01
"""

from alembic import op

revision = "0009_event_times"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = ("processing_at", "resolved_at", "cancelled_at", "expired_at", "reversed_at")


def upgrade() -> None:
    op.execute(
        "ALTER TABLE events " + ", ".join(f"ADD COLUMN IF NOT EXISTS {c} timestamptz" for c in COLUMNS)
    )


def downgrade() -> None:
    op.execute("ALTER TABLE events " + ", ".join(f"DROP COLUMN IF EXISTS {c}" for c in COLUMNS))
