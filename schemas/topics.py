"""Topic names, their Avro value schema and their settings: the single source of truth.

Every customer-scoped topic is keyed by `customer_id` and has the same partition count
(co-partitioning), so one customer's state lives in one partition of each processor.
A `TOPIC_PREFIX` lets several isolated deployments (or test runs) share one cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    """A logical topic: its base name, the schema of its values and how it is kept."""

    name: str
    schema: str | None  # Avro record name in schemas/avro; None for raw bytes (changelogs)
    compacted: bool = False
    key: str = "customer_id"
    config: dict[str, str] = field(default_factory=dict)

    def kafka_config(self) -> dict[str, str]:
        cfg = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if not self.compacted:
            cfg["retention.ms"] = str(7 * 24 * 3600 * 1000)
        cfg.update(self.config)
        return cfg


EVENTS_LOYALTY = "events.loyalty"
EVENTS_TRACKING = "events.tracking"
EVENTS_INBOUND = "events.inbound"  # JSON bodies of POST /behavior/events, for the router
LOYALTY_RESULTS = "loyalty.results"
PROFILES_CHANGES = "profiles.changes"
NOTIFICATIONS = "notifications"
AUDIENCES_MEMBERSHIP = "audiences.membership"
JOURNEYS_ACTIVITY = "journeys.activity"
DELIVERY_DLQ = "delivery.dlq"
DELIVERY_DISABLED = "delivery.disabled"  # endpoints disabled after a 410, by endpoint hash
DELIVERIES = "deliveries"
PROGRAM_CONFIG = "program.config"
LOYALTY_REFERRALS = "loyalty.referrals"  # re-keyed by referral code -> owner
COUPON_CLAIMS = "coupons.claims"  # keyed by coupon code: decides global single use
CAMPAIGN_BUDGETS = "campaigns.budgets"  # keyed by campaign id: grants budget spends exactly
# every program version with who/when/what (JSON values; program.config keeps only the latest)
PROGRAM_HISTORY = "program.history"
ADMIN_AUDIT = "admin.audit"  # every admin write (AdminAudit), sunk to the admin_audit table
# the loyalty processor's answers to DRY_RUN commands (JSON, key = request id; ingest waits on them)
LOYALTY_DRY_RUN_REPLIES = "loyalty.dry_run.replies"
KEEP_FOREVER = {"retention.ms": "-1"}

# Default delay tiers for webhook retries; a tier's name is its delay (parsed by delivery).
# Configurable in the program (delivery.retry_tiers); these topics are created by the stack.
RETRY_TIERS: tuple[str, ...] = ("5s", "1m", "5m", "30m", "2h", "6h")


def retry_topic(tier: str) -> str:
    return f"delivery.retry.{tier}"


TOPICS: dict[str, TopicSpec] = {
    spec.name: spec
    for spec in [
        TopicSpec(EVENTS_LOYALTY, "Event"),
        TopicSpec(EVENTS_TRACKING, "Event"),
        TopicSpec(EVENTS_INBOUND, None),  # raw JSON bytes (docs/producing.md)
        TopicSpec(LOYALTY_RESULTS, "Result"),
        TopicSpec(PROFILES_CHANGES, "Profile"),
        TopicSpec(NOTIFICATIONS, "Notification"),
        TopicSpec(AUDIENCES_MEMBERSHIP, "Membership"),
        TopicSpec(JOURNEYS_ACTIVITY, "JourneyActivity"),
        TopicSpec(DELIVERY_DLQ, "Notification"),
        TopicSpec(DELIVERY_DISABLED, None, compacted=True, key="endpoint_hash"),  # JSON values
        TopicSpec(DELIVERIES, "DeliveryAttempt"),
        TopicSpec(PROGRAM_CONFIG, "ProgramConfig", compacted=True, key="program"),
        TopicSpec(LOYALTY_REFERRALS, "Event", key="referral_code"),
        TopicSpec(COUPON_CLAIMS, "Event", key="coupon_code"),
        TopicSpec(CAMPAIGN_BUDGETS, "Event", key="campaign_id"),
        TopicSpec(PROGRAM_HISTORY, None, key="program", config=KEEP_FOREVER),  # JSON values
        TopicSpec(ADMIN_AUDIT, "AdminAudit", key="resource", config=KEEP_FOREVER),
        TopicSpec(LOYALTY_DRY_RUN_REPLIES, None, key="request_id", config={"retention.ms": "3600000"}),
        *[TopicSpec(retry_topic(t), "Notification") for t in RETRY_TIERS],
    ]
}


def topic_name(base: str, settings: Settings | None = None) -> str:
    """The physical Kafka topic name for a logical one (applies TOPIC_PREFIX)."""
    prefix = (settings or Settings.from_env()).topic_prefix
    return f"{prefix}{base}"


def base_name(physical: str, settings: Settings | None = None) -> str:
    """Inverse of `topic_name`."""
    prefix = (settings or Settings.from_env()).topic_prefix
    return physical[len(prefix) :] if prefix and physical.startswith(prefix) else physical


def schema_for(base: str) -> str | None:
    """The Avro record name carried by a logical topic (changelogs carry raw JSON bytes)."""
    spec = TOPICS.get(base)
    return spec.schema if spec else None
