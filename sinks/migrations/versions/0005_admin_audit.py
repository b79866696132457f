"""admin_audit: every admin write (who, when, what changed, versions before/after), from the
admin.audit topic. Secrets are masked before the entry is produced, so none reaches this table.

Revision ID: 0005_admin_audit
Revises: 0003
Create Date: 2027-01-10
"""

from alembic import op

revision = "0005_admin_audit"
down_revision = "0003"
branch_labels = None
depends_on = None

UP = """
CREATE TABLE admin_audit (
    id text PRIMARY KEY,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    resource text NOT NULL,
    version_before integer,
    version_after integer,
    summary text,
    changes jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX admin_audit_at ON admin_audit (at DESC);
CREATE INDEX admin_audit_resource ON admin_audit (resource text_pattern_ops, at DESC);
"""

DOWN = "DROP TABLE admin_audit;"


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
