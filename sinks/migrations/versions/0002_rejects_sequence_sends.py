"""Quarantine for refused rows, per-customer ordering by sequence, repeated sends counted.

- sink_rejects: a row PostgreSQL refused for a data reason (or a record that could not be
  decoded or mapped) is kept here instead of stopping every table behind it.
- wallets.sequence / customers.sequence: the loyalty processor's per-customer counter; the
  latest state is the greatest sequence, not the greatest wall-clock time (clocks differ
  between hosts after a failover).
- events.sends: how many times an event id was received; the row keeps the first send's
  fields (the one that was applied), a repeat only counts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UP = """
CREATE TABLE sink_rejects (
    topic text NOT NULL,
    partition int NOT NULL,
    "offset" bigint NOT NULL,
    "table" text NOT NULL DEFAULT '',
    error text NOT NULL,
    record json,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset", "table")
);
CREATE INDEX sink_rejects_rejected_at ON sink_rejects (rejected_at);

ALTER TABLE wallets ADD COLUMN sequence bigint;
ALTER TABLE customers ADD COLUMN sequence bigint;
ALTER TABLE events ADD COLUMN sends int NOT NULL DEFAULT 0;
"""

DOWN = """
ALTER TABLE events DROP COLUMN sends;
ALTER TABLE customers DROP COLUMN sequence;
ALTER TABLE wallets DROP COLUMN sequence;
DROP TABLE sink_rejects;
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
