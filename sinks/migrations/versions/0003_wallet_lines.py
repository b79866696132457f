"""wallet_lines: the current state of every ledger line a wallet holds (what is left of it).

Results carry only the lines an event changed (a wallet of bounded size), so the full list of
a customer's open lines lives here, one row per line, the latest per-customer `sequence`
winning. `ledger_lines` stays the history of what happened (accumulations, redemptions,
expiries, reversals), so sums over it keep their meaning.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UP = """
CREATE TABLE wallet_lines (
    id text PRIMARY KEY,
    customer_id text NOT NULL,
    kind text,
    reward_id text,
    campaign_id text,
    event_id text,
    amount double precision NOT NULL DEFAULT 0,
    issued_at timestamptz,
    expiration_date timestamptz,
    line jsonb,
    sequence bigint,
    updated_at timestamptz NOT NULL
);
CREATE INDEX wallet_lines_open ON wallet_lines (customer_id, expiration_date) WHERE amount <> 0;
"""

DOWN = "DROP TABLE wallet_lines;"


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
