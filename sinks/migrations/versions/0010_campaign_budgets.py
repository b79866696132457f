"""campaign_budgets: what each budgeted campaign has spent of its budget (issue 17, budget use).

One row per campaign, written by the sink from the BUDGET_DECISION commands on events.loyalty
(processors/loyalty/budgets.py): each decision carries the campaign's exact total `spent` after
it, its `budget` and `exhausted_at`. A campaign's spend never goes down, so the decision with the
highest `spent` is the latest (on a tie the later decision wins: a budget changed with nothing
granted); a replayed or late decision changes nothing. `remaining` = budget - spent, never below
0; `budget` is NULL once the program took the campaign's budget off (or removed the campaign).

Revision ID: 0010_campaign_budgets
Revises: 0009_event_times
Create Date: 2026-12-01
"""

from alembic import op

revision = "0010_campaign_budgets"
down_revision = "0009_event_times"
branch_labels = None
depends_on = None

UP = """
CREATE TABLE campaign_budgets (
    campaign_id text PRIMARY KEY,
    reward_id text,
    budget double precision,
    spent double precision NOT NULL DEFAULT 0,
    remaining double precision,
    exhausted_at timestamptz,
    updated_at timestamptz NOT NULL
);
"""

DOWN = "DROP TABLE campaign_budgets;"


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
