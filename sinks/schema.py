"""The sink schema as SQLAlchemy Core metadata: one `Table` per table, at the migrations' head.

It is the one definition of each table: the writer (`sinks/tables.py`) takes its column lists
and keys from it, Alembic's env.py names it as `target_metadata` (so `alembic revision
--autogenerate` diffs against it), and `tests/integration/test_sink_schema.py` runs the
migrations on a fresh database and requires an empty autogenerate diff against it, and the
same index and constraint definitions as this metadata's own DDL (autogenerate does not
compare a partial index's WHERE, INCLUDE or operator classes). A new
column or index goes here and into a new migration in the same commit.

Views, the materialized view, functions and triggers stay in the migrations (Core metadata
does not model them and autogenerate does not compare them).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Double,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSON, JSONB, TIMESTAMP

metadata = MetaData()

Timestamptz = TIMESTAMP(timezone=True)


def _text(name: str, **kw) -> Column:
    return Column(name, Text, **kw)


def _ts(name: str, **kw) -> Column:
    return Column(name, Timestamptz, **kw)


def _float(name: str, **kw) -> Column:
    return Column(name, Double, **kw)


def _json(name: str, **kw) -> Column:
    return Column(name, JSONB, **kw)


sink_offsets = Table(
    "sink_offsets",
    metadata,
    _text("topic", primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    _ts("updated_at", nullable=False, server_default=text("now()")),
)

events = Table(
    "events",
    metadata,
    _text("id", primary_key=True),
    _text("customer_id", nullable=False),
    _text("type", nullable=False),
    _text("kind", nullable=False, server_default=text("'EVENT'")),
    _text("path"),
    _text("reference"),
    _text("brand_id"),
    _text("status", nullable=False, server_default=text("'PENDING'")),
    _text("reason"),
    _float("points"),
    _json("result"),
    _json("properties"),
    _json("tags"),
    _json("metadata"),
    Column("fulfilled", Boolean),
    _text("target_event_id"),
    _ts("issued_at"),
    _ts("received_at"),
    _ts("processed_at"),
    Column("config_version", Integer),
    Column("sends", Integer, nullable=False, server_default=text("0")),
    # the lifecycle times (schemas/event_times.py), migration 0009_event_times
    _ts("processing_at"),
    _ts("resolved_at"),
    _ts("cancelled_at"),
    _ts("expired_at"),
    _ts("reversed_at"),
    Index("events_customer_issued_id", "customer_id", "issued_at", "id"),
    Index("events_type_issued", "type", "issued_at"),
    Index("events_target", "target_event_id", postgresql_where=text("target_event_id IS NOT NULL")),
    Index("events_issued_at", "issued_at", postgresql_include=["kind", "type", "status"]),
    Index("events_rules_skipped", "issued_at",
          postgresql_where=text("(result -> 'rules_skipped') <> '[]'::jsonb")),  # fmt: skip
)

ledger_lines = Table(
    "ledger_lines",
    metadata,
    _text("id", primary_key=True),
    _text("customer_id", nullable=False),
    _text("event_id"),
    _text("kind"),
    _text("reward_id"),
    _text("campaign_id"),
    _text("rule"),
    _float("amount", nullable=False, server_default=text("0")),
    _ts("issued_at"),
    _ts("expiration_date"),
    _ts("processed_at"),
    _json("line"),
    Index("ledger_lines_customer_issued_id", "customer_id", "issued_at", "id"),
    Index("ledger_lines_event", "event_id"),
    Index("ledger_lines_issued_at", "issued_at", postgresql_include=["kind", "amount", "campaign_id"]),
)

wallets = Table(
    "wallets",
    metadata,
    _text("customer_id", primary_key=True),
    _float("points", nullable=False, server_default=text("0")),
    _float("lifetime", nullable=False, server_default=text("0")),
    _float("pending", nullable=False, server_default=text("0")),
    _json("balance"),
    _json("wallet"),
    _text("tier"),
    _text("event_id"),
    _ts("updated_at", nullable=False),
    Column("sequence", BigInteger),
)

wallet_lines = Table(
    "wallet_lines",
    metadata,
    _text("id", primary_key=True),
    _text("customer_id", nullable=False),
    _text("kind"),
    _text("reward_id"),
    _text("campaign_id"),
    _text("event_id"),
    _float("amount", nullable=False, server_default=text("0")),
    _ts("issued_at"),
    _ts("expiration_date"),
    _json("line"),
    Column("sequence", BigInteger),
    _ts("updated_at", nullable=False),
    Index("wallet_lines_open", "customer_id", "expiration_date", postgresql_where=text("amount <> 0")),
)

customers = Table(
    "customers",
    metadata,
    _text("customer_id", primary_key=True),
    Column("anonymous", Boolean),
    Column("identified", Boolean),
    _text("tier"),
    _json("tags"),
    _json("consent"),
    _float("purchase_count"),
    _float("total_spend"),
    _ts("last_purchase_at"),
    _float("event_count"),
    _ts("last_event_at"),
    _ts("first_seen"),
    _float("lifetime_points"),
    _float("points"),
    _text("birthday"),
    _ts("registered_at"),
    _float("rfm_recency"),
    _float("rfm_frequency"),
    _float("rfm_monetary"),
    _text("rfm_score"),
    _json("events_by_type"),
    _json("traits"),
    _json("profile"),
    Column("config_version", Integer),
    _ts("updated_at", nullable=False),
    Column("sequence", BigInteger),
    _text("merged_into"),  # migration 0010_customer_merged_into
    Index("customers_last_event_at", "last_event_at"),
    Index("customers_tier", "tier"),
    Index("customers_merged_into", "merged_into", postgresql_where=text("merged_into IS NOT NULL")),
)

tier_changes = Table(
    "tier_changes",
    metadata,
    _text("id", primary_key=True),
    _text("customer_id", nullable=False),
    _text("direction", nullable=False),
    _text("from_tier"),
    _text("to_tier"),
    _ts("changed_at", nullable=False),
    _json("data"),
    Index("tier_changes_customer_changed_id", "customer_id", "changed_at", "id"),
    Index("tier_changes_changed_at", "changed_at"),
)

customer_badges = Table(
    "customer_badges",
    metadata,
    _text("customer_id", primary_key=True),
    _text("badge_id", primary_key=True),
    _text("badge_name"),
    Column("count", Integer, nullable=False, server_default=text("0")),
    _ts("first_awarded_at"),
    _ts("awarded_at"),
    _ts("revoked_at"),
    _text("trigger_event_id"),
    _text("trigger_event_type"),
    _text("achievement_id"),
    _text("campaign_id"),
    Column("sequence", BigInteger),
    _ts("updated_at", nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    _text("id", primary_key=True),
    _text("event", nullable=False),
    _text("customer_id", nullable=False),
    _json("data"),
    _ts("created_at", nullable=False),
    Column("config_version", Integer),
)

audience_members = Table(
    "audience_members",
    metadata,
    _text("audience_id", primary_key=True),
    _text("customer_id", primary_key=True),
    _ts("entered_at", nullable=False),
    _text("reason"),
    Column("config_version", Integer),
    Index("audience_members_customer", "customer_id"),
)

audience_membership_events = Table(
    "audience_membership_events",
    metadata,
    _text("id", primary_key=True),
    _text("audience_id", nullable=False),
    _text("customer_id", nullable=False),
    _text("action", nullable=False),
    _text("reason"),
    _ts("at", nullable=False),
    Column("config_version", Integer),
    Index("audience_membership_events_aud", "audience_id", "at"),
    Index("audience_membership_events_at", "at"),
)

journey_instances = Table(
    "journey_instances",
    metadata,
    _text("instance_id", primary_key=True),
    _text("journey_id", nullable=False),
    _text("customer_id", nullable=False),
    _text("status", nullable=False, server_default=text("'ACTIVE'")),
    _text("current_node"),
    _text("trigger_event_id"),
    _ts("entered_at"),
    _ts("ended_at"),
    _ts("updated_at", nullable=False),
    Index("journey_instances_journey", "journey_id", "status"),
    Index("journey_instances_entered_at", "entered_at", postgresql_include=["journey_id", "status"]),
    Index("journey_instances_customer", "customer_id"),
)

journey_transitions = Table(
    "journey_transitions",
    metadata,
    _text("id", primary_key=True),
    _text("journey_id", nullable=False),
    _text("instance_id", nullable=False),
    _text("customer_id", nullable=False),
    _text("kind", nullable=False),
    _text("from_node"),
    _text("to_node"),
    _text("action"),
    _text("trigger_event_id"),
    _ts("at", nullable=False),
    Column("config_version", Integer),
    _json("data"),
    Index("journey_transitions_instance", "instance_id", "at"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    _text("webhook_id", primary_key=True),
    _text("endpoint_id", primary_key=True),
    Column("attempt", Integer, primary_key=True),
    _text("event", nullable=False),
    _text("customer_id", nullable=False),
    Column("status_code", Integer),
    _float("latency_ms"),
    _text("outcome", nullable=False),
    _text("error"),
    _ts("at", nullable=False),
    Index("webhook_deliveries_at", "at"),
)

dlq = Table(
    "dlq",
    metadata,
    _text("id", primary_key=True),
    _text("endpoint_id", primary_key=True, server_default=text("''")),
    _text("event", nullable=False),
    _text("customer_id", nullable=False),
    _json("data"),
    _ts("created_at", nullable=False),
    Column("attempt", Integer),
    _text("last_error"),
    Column("config_version", Integer),
    _ts("dead_at"),
    Index("dlq_dead_at", "dead_at"),
)

sink_rejects = Table(
    "sink_rejects",
    metadata,
    _text("topic", primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    _text("table", primary_key=True, server_default=text("''")),
    _text("error", nullable=False),
    Column("record", JSON),  # json, not jsonb: it keeps a \u0000 that jsonb refuses
    _ts("rejected_at", nullable=False, server_default=text("now()")),
    # migration 0008_sink_rejects_dlq: the publishing order and the original bytes
    Column("id", BigInteger, Identity(always=False), nullable=False),
    Column("key", BYTEA),
    Column("value", BYTEA),
    Column("bytes_kept", Boolean, nullable=False, server_default=text("false")),
    Column("config_version", BigInteger, nullable=False, server_default=text("-1")),
    Index("sink_rejects_rejected_at", "rejected_at"),
    Index("sink_rejects_id", "id", unique=True),
)

sink_dlq_relay = Table(
    "sink_dlq_relay",
    metadata,
    _text("relay", primary_key=True),
    Column("last_id", BigInteger, nullable=False),
    _ts("updated_at", nullable=False, server_default=text("now()")),
)

admin_audit = Table(
    "admin_audit",
    metadata,
    _text("id", primary_key=True),
    _ts("at", nullable=False),
    _text("actor", nullable=False),
    _text("action", nullable=False),
    _text("resource", nullable=False),
    Column("version_before", Integer),
    Column("version_after", Integer),
    _text("summary"),
    _json("changes", nullable=False, server_default=text("'[]'::jsonb")),
    Index("admin_audit_at", text("at DESC")),
    Index("admin_audit_resource", "resource", text("at DESC"),
          postgresql_ops={"resource": "text_pattern_ops"}),  # fmt: skip
)

dashboard_event_hours = Table(
    "dashboard_event_hours",
    metadata,
    _ts("hour", primary_key=True),
    _text("type", primary_key=True),
    _text("outcome", primary_key=True),
    Column("events", BigInteger, nullable=False),
)

dashboard_ledger_hours = Table(
    "dashboard_ledger_hours",
    metadata,
    _ts("hour", primary_key=True),
    _text("kind", primary_key=True),
    _text("campaign_id", primary_key=True),
    _float("amount", nullable=False),
    Column("lines", BigInteger, nullable=False),
)

dashboard_skip_hours = Table(
    "dashboard_skip_hours",
    metadata,
    _ts("hour", primary_key=True),
    _text("campaign_id", primary_key=True),
    _text("reason", primary_key=True),
    Column("skips", BigInteger, nullable=False),
)

dashboard_rollup_state = Table(
    "dashboard_rollup_state",
    metadata,
    _text("name", primary_key=True),
    _ts("built_at", nullable=False),
    _float("seconds"),
)

leaderboard_scores = Table(
    "leaderboard_scores",
    metadata,
    _text("board_id", primary_key=True),
    Column("period_start", Date, primary_key=True),
    _text("customer_id", primary_key=True),
    _float("score", nullable=False, server_default=text("0")),
    Column("eligible", Boolean, nullable=False, server_default=text("true")),
    _text("audience_id"),
    _text("consent_purpose", nullable=False, server_default=text("'leaderboards'")),
    _ts("updated_at"),
    Index("leaderboard_scores_rank", "board_id", "period_start", text("score DESC"), "customer_id",
          postgresql_where=text("eligible")),  # fmt: skip
    Index("leaderboard_scores_customer", "customer_id"),
)

leaderboard_score_buckets = Table(
    "leaderboard_score_buckets",
    metadata,
    _text("board_id"),
    Column("period_start", Date),
    Column("level", SmallInteger),
    Column("bucket", BigInteger),
    Column("n", BigInteger, nullable=False),
    # n in the key's index: a rank reads the counts with an index-only scan
    PrimaryKeyConstraint("board_id", "period_start", "level", "bucket", postgresql_include=["n"]),
)

campaign_budgets = Table(
    "campaign_budgets",
    metadata,
    _text("campaign_id", primary_key=True),
    _text("reward_id"),
    _float("budget"),
    _float("spent", nullable=False, server_default=text("0")),
    _float("remaining"),
    _ts("exhausted_at"),
    _ts("updated_at", nullable=False),
)
