"""Write targets: how each kind of row is reduced within a batch and upserted in PostgreSQL.

Rows are COPYed into a per-connection temp staging table, then moved with one
INSERT ... SELECT ... ON CONFLICT (or DELETE ... USING) per target. Because a single
statement may not touch the same row twice, rows are first reduced in Python to one per
natural key, with the same "latest wins" rule the SQL applies against the stored row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

Row = dict[str, Any]
Reducer = Callable[[Row, Row], Row]


def keep_last(old: Row, new: Row) -> Row:
    return new


def keep_first(old: Row, new: Row) -> Row:
    return old


def latest_by(col: str) -> Reducer:
    """Keep the row with the greatest `col`; on a tie the later record wins."""

    def reduce(old: Row, new: Row) -> Row:
        if old[col] is not None and (new[col] is None or new[col] < old[col]):
            return old
        return new

    return reduce


def latest_in_sequence(old: Row, new: Row) -> Row:
    """Keep the row with the greatest per-customer `sequence` (mirrors IN_SEQUENCE); rows
    written before the processor kept a sequence fall back to `updated_at`."""
    if old["sequence"] is not None and new["sequence"] is not None:
        return old if new["sequence"] < old["sequence"] else new
    return latest_by("updated_at")(old, new)


def fold_sends(old: Row, new: Row) -> Row:
    """A repeated event id keeps the first send's fields (the one applied) and counts."""
    return {**old, "sends": old["sends"] + new["sends"]}


def merge_journey(old: Row, new: Row) -> Row:
    """Fold a later activity of one journey instance into its state (mirrors the SQL).

    Only ENTER, EXIT and COMPLETE carry a status; a TRANSITION or ACTION (status None)
    keeps the one the instance has."""
    terminal = old["status"] in ("EXITED", "COMPLETED")
    return {
        **old,
        "status": old["status"] if terminal else new["status"] or old["status"],
        "current_node": new["current_node"] or old["current_node"],
        "trigger_event_id": old["trigger_event_id"] or new["trigger_event_id"],
        "entered_at": old["entered_at"] or new["entered_at"],
        "ended_at": new["ended_at"] or old["ended_at"],
        "updated_at": max(x for x in (old["updated_at"], new["updated_at"]) if x is not None)
        if old["updated_at"] or new["updated_at"]
        else None,
    }


@dataclass(frozen=True)
class Target:
    """One staged write: the table, its staged columns, natural key and statements."""

    name: str
    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    reduce: Reducer = keep_last
    statements: tuple[str, ...] = ()  # `{stage}` is replaced by the staging table name
    extra_stage_columns: tuple[tuple[str, str], ...] = ()
    counted: str = field(default="")  # metrics label; defaults to the table name

    @property
    def stage(self) -> str:
        return f"_stage_{self.name}"

    def stage_ddl(self) -> str:
        extras = "".join(f", NULL::{typ} AS {col}" for col, typ in self.extra_stage_columns)
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} ON COMMIT DELETE ROWS AS "
            f"SELECT {', '.join(self.columns)}{extras} FROM {self.table} WITH NO DATA"
        )

    @property
    def all_columns(self) -> tuple[str, ...]:
        return self.columns + tuple(col for col, _ in self.extra_stage_columns)

    def sql(self) -> list[str]:
        return [s.format(stage=self.stage) for s in self.statements]


def upsert(table: str, columns: Iterable[str], key: Iterable[str], tail: str) -> str:
    cols = ", ".join(columns)
    return f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {{stage}} ON CONFLICT ({', '.join(key)}) {tail}"


def set_excluded(columns: Iterable[str], key: Iterable[str]) -> str:
    keys = set(key)
    return ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in keys)


def insert_only(name: str, table: str, columns: tuple[str, ...], key: tuple[str, ...]) -> Target:
    """Append-style tables keyed by a natural id: a replay is a no-op."""
    return Target(name, table, columns, key, keep_first, (upsert(table, columns, key, "DO NOTHING"),))


def latest_wins(name: str, table: str, columns: tuple[str, ...], key: tuple[str, ...], col: str) -> Target:
    """Current-state tables: never go backwards in `col` (e.g. processed_at)."""
    tail = (
        f"DO UPDATE SET {set_excluded(columns, key)} "
        f"WHERE {table}.{col} IS NULL OR EXCLUDED.{col} >= {table}.{col}"
    )
    return Target(name, table, columns, key, latest_by(col), (upsert(table, columns, key, tail),))


def in_sequence(table: str, columns: tuple[str, ...], key: tuple[str, ...] = ("customer_id",)) -> Target:
    """Per-customer state: the greatest processor `sequence` wins (see latest_in_sequence)."""
    newer = (
        f"CASE WHEN EXCLUDED.sequence IS NOT NULL AND {table}.sequence IS NOT NULL "
        f"THEN EXCLUDED.sequence >= {table}.sequence "
        f"ELSE EXCLUDED.updated_at >= {table}.updated_at END"
    )
    tail = f"DO UPDATE SET {set_excluded(columns, key)} WHERE {newer}"
    return Target(table, table, columns, key, latest_in_sequence, (upsert(table, columns, key, tail),))


EVENT_COLS = (
    "id", "customer_id", "type", "kind", "path", "reference", "brand_id", "status",
    "properties", "tags", "metadata", "fulfilled", "target_event_id", "issued_at", "received_at",
    "sends",
)  # fmt: skip
# an event's lifecycle times (schemas/event_times.py), kept once known
TIME_COLS = ("processing_at", "resolved_at", "cancelled_at", "expired_at", "reversed_at")
RESULT_COLS = (
    "id", "customer_id", "type", "kind", "path", "reference", "brand_id", "status", "reason",
    "points", "result", "properties", "target_event_id", "issued_at", "received_at",
    "processed_at", "config_version", *TIME_COLS,
)  # fmt: skip
_FROM_EVENT = set(EVENT_COLS) - {"id", "status", "sends"}
_KEEP_FROM_EVENT = ("reference", "brand_id", "properties", "target_event_id", "issued_at",
                    "received_at")  # fmt: skip

EVENTS_FROM_EVENT = Target(
    "events_from_event",
    "events",
    EVENT_COLS,
    ("id",),
    fold_sends,
    (
        upsert(
            "events",
            EVENT_COLS,
            ("id",),
            # a row so far written only by its result (sends = 0) takes the event's fields;
            # a repeat keeps the first send's (the applied one) and is only counted
            "DO UPDATE SET "
            + ", ".join(
                f"{c} = CASE WHEN events.sends = 0 THEN EXCLUDED.{c} ELSE events.{c} END"
                for c in EVENT_COLS
                if c in _FROM_EVENT
            )
            + ", status = CASE WHEN events.processed_at IS NULL AND events.sends = 0"
            " THEN EXCLUDED.status ELSE events.status END"
            ", sends = events.sends + EXCLUDED.sends",
        ),
    ),
)
def latest_result(old: Row, new: Row) -> Row:
    """The latest result of an event wins (as the SQL's WHERE), keeping a time the other one
    knows and it does not (a result written before the processor kept every time)."""
    kept, other = (new, old) if latest_by("processed_at")(old, new) is new else (old, new)
    return {**kept, **{c: kept[c] or other[c] for c in TIME_COLS}}


EVENTS_FROM_RESULT = Target(
    "events_from_result",
    "events",
    RESULT_COLS,
    ("id",),
    latest_result,
    (
        upsert(
            "events",
            RESULT_COLS,
            ("id",),
            "DO UPDATE SET status = EXCLUDED.status, reason = EXCLUDED.reason, "
            "points = EXCLUDED.points, result = EXCLUDED.result, "
            "processed_at = EXCLUDED.processed_at, config_version = EXCLUDED.config_version, "
            # the result names the event as applied: its fields win over a repeat's
            + ", ".join(f"{c} = COALESCE(EXCLUDED.{c}, events.{c})" for c in _KEEP_FROM_EVENT + TIME_COLS)
            + " WHERE events.processed_at IS NULL OR EXCLUDED.processed_at >= events.processed_at",
        ),
    ),
    counted="events",
)

# An event and its result in one batch, for an id not yet in `events`: one INSERT of the row
# the two upserts above would leave (events_from_event's insert, then events_from_result's
# update of it) instead of an insert and an update of a row with seven indexes. The stage
# holds both rows side by side (the result's columns prefixed r_), so every value of both is
# still parsed, and an id that exists (a replay, a repeat, a concurrent writer) is left to the
# two upserts (RETURNING tells which ids went in).
MERGED_STAGE = "_stage_events_merged"
MERGED_STAGE_COLUMNS = EVENT_COLS + tuple(f"r_{c}" for c in RESULT_COLS)
_RESULT_SETS = ("status", "reason", "points", "result", "processed_at", "config_version", *TIME_COLS)


def _merged_value(col: str) -> str:
    if col in _KEEP_FROM_EVENT:
        return f"COALESCE(r_{col}, {col})"
    return f"r_{col}" if col in _RESULT_SETS else col


_MERGED_COLS = EVENT_COLS + tuple(c for c in RESULT_COLS if c not in EVENT_COLS)
MERGED_STAGE_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {MERGED_STAGE} ON COMMIT DELETE ROWS AS SELECT "
    + ", ".join([f"e.{c}" for c in EVENT_COLS] + [f"r.{c} AS r_{c}" for c in RESULT_COLS])
    + " FROM events e, events r WITH NO DATA"
)
MERGED_INSERT = (
    f"INSERT INTO events ({', '.join(_MERGED_COLS)}) "
    f"SELECT {', '.join(_merged_value(c) for c in _MERGED_COLS)} FROM {MERGED_STAGE} "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)
RESULT_NOT_NULL = ("customer_id", "type", "kind", "status")  # checked by the upsert's insert


LEDGER_COLS = (
    "id", "customer_id", "event_id", "kind", "reward_id", "campaign_id", "rule", "amount",
    "issued_at", "expiration_date", "processed_at", "line",
)  # fmt: skip
WALLET_COLS = (
    "customer_id", "points", "lifetime", "pending", "balance", "wallet", "tier", "event_id",
    "updated_at", "sequence",
)  # fmt: skip
CUSTOMER_COLS = (
    "customer_id", "anonymous", "identified", "tier", "tags", "consent", "purchase_count",
    "total_spend", "last_purchase_at", "event_count", "last_event_at", "first_seen",
    "lifetime_points", "points", "birthday", "registered_at", "rfm_recency", "rfm_frequency",
    "rfm_monetary", "rfm_score", "events_by_type", "traits", "profile", "config_version",
    "updated_at", "sequence", "merged_into",
)  # fmt: skip
WALLET_LINE_COLS = (
    "id", "customer_id", "kind", "reward_id", "campaign_id", "event_id", "amount", "issued_at",
    "expiration_date", "line", "sequence", "updated_at",
)  # fmt: skip
BADGE_COLS = (
    "customer_id", "badge_id", "badge_name", "count", "first_awarded_at", "awarded_at",
    "revoked_at", "trigger_event_id", "trigger_event_type", "achievement_id", "campaign_id",
    "sequence", "updated_at",
)  # fmt: skip
TIER_COLS = ("id", "customer_id", "direction", "from_tier", "to_tier", "changed_at", "data")
NOTIFICATION_COLS = ("id", "event", "customer_id", "data", "created_at", "config_version")
MEMBER_COLS = ("audience_id", "customer_id", "entered_at", "reason", "config_version")
MEMBERSHIP_EVENT_COLS = (
    "id", "audience_id", "customer_id", "action", "reason", "at", "config_version",
)  # fmt: skip
INSTANCE_COLS = (
    "instance_id", "journey_id", "customer_id", "status", "current_node", "trigger_event_id",
    "entered_at", "ended_at", "updated_at",
)  # fmt: skip
TRANSITION_COLS = (
    "id", "journey_id", "instance_id", "customer_id", "kind", "from_node", "to_node", "action",
    "trigger_event_id", "at", "config_version", "data",
)  # fmt: skip
DELIVERY_COLS = (
    "webhook_id", "endpoint_id", "attempt", "event", "customer_id", "status_code", "latency_ms",
    "outcome", "error", "at",
)  # fmt: skip
DLQ_COLS = (
    "id", "endpoint_id", "event", "customer_id", "data", "created_at", "attempt", "last_error",
    "config_version", "dead_at",
)  # fmt: skip
AUDIT_COLS = (
    "id", "at", "actor", "action", "resource", "version_before", "version_after", "summary", "changes",
)  # fmt: skip

_MEMBER_LIST = ", ".join(MEMBER_COLS)
AUDIENCE_MEMBERS = Target(
    "audience_members",
    "audience_members",
    MEMBER_COLS,
    ("audience_id", "customer_id"),
    latest_by("entered_at"),
    (
        "DELETE FROM audience_members m USING {stage} s WHERE s.action = 'LEAVE' "
        "AND m.audience_id = s.audience_id AND m.customer_id = s.customer_id "
        "AND m.entered_at <= s.entered_at",
        f"INSERT INTO audience_members ({_MEMBER_LIST}) SELECT {_MEMBER_LIST} FROM {{stage}} "
        "WHERE action = 'ENTER' ON CONFLICT (audience_id, customer_id) DO NOTHING",
    ),
    extra_stage_columns=(("action", "text"),),
)

_INSTANCE_LIST = ", ".join(INSTANCE_COLS)
# an instance first seen through a TRANSITION or ACTION (status NULL) is ACTIVE
_INSTANCE_SELECT = _INSTANCE_LIST.replace("status", "COALESCE(status, 'ACTIVE')", 1)
JOURNEY_INSTANCES = Target(
    "journey_instances",
    "journey_instances",
    INSTANCE_COLS,
    ("instance_id",),
    merge_journey,
    (
        f"INSERT INTO journey_instances AS j ({_INSTANCE_LIST}) SELECT {_INSTANCE_SELECT} "
        "FROM {stage} ON CONFLICT (instance_id) DO UPDATE SET "
        "status = CASE WHEN j.status IN ('EXITED', 'COMPLETED') THEN j.status "
        "ELSE COALESCE(EXCLUDED.status, j.status) END, "
        "current_node = COALESCE(EXCLUDED.current_node, j.current_node), "
        "trigger_event_id = COALESCE(j.trigger_event_id, EXCLUDED.trigger_event_id), "
        "entered_at = COALESCE(j.entered_at, EXCLUDED.entered_at), "
        "ended_at = COALESCE(j.ended_at, EXCLUDED.ended_at), "
        "updated_at = GREATEST(j.updated_at, EXCLUDED.updated_at)",
    ),
)


def sum_scores(old: Row, new: Row) -> Row:
    """Deltas to one (board, period, customer) within a batch add up."""
    return {**new, "score": old["score"] + new["score"]}


def then(target: Target, *statements: str) -> Target:
    """`target` with more statements run after its own (same stage)."""
    return replace(target, statements=target.statements + statements)


LEADERBOARD_COLS = (
    "board_id", "period_start", "customer_id", "score", "audience_id", "consent_purpose",
    "updated_at",
)  # fmt: skip
_ELIGIBLE = "leaderboard_eligible({t}customer_id, {t}audience_id, {t}consent_purpose)"
_LB_LIST = ", ".join(LEADERBOARD_COLS)
# scores add up; eligibility is computed against the customers and audience_members rows
# (written earlier in the same batch: TARGETS order) and refreshed when those change
LEADERBOARD_SCORES = Target(
    "leaderboard_scores",
    "leaderboard_scores",
    LEADERBOARD_COLS,
    ("board_id", "period_start", "customer_id"),
    sum_scores,
    (
        f"INSERT INTO leaderboard_scores AS l ({_LB_LIST}, eligible) "
        f"SELECT {_LB_LIST}, {_ELIGIBLE.format(t='')} FROM {{stage}} "
        "ON CONFLICT (board_id, period_start, customer_id) DO UPDATE SET "
        "score = l.score + EXCLUDED.score, audience_id = EXCLUDED.audience_id, "
        "consent_purpose = EXCLUDED.consent_purpose, eligible = EXCLUDED.eligible, "
        "updated_at = GREATEST(l.updated_at, EXCLUDED.updated_at)",
    ),
)


def refresh_eligibility(audience_only: bool) -> str:
    """Re-check the leaderboard rows of the customers in the stage (a profile or membership
    change may add or remove them)."""
    only = "l.audience_id IS NOT NULL AND " if audience_only else ""
    return (
        f"UPDATE leaderboard_scores l SET eligible = {_ELIGIBLE.format(t='l.')} "
        f"WHERE {only}l.customer_id IN (SELECT customer_id FROM {{stage}}) "
        f"AND l.eligible IS DISTINCT FROM {_ELIGIBLE.format(t='l.')}"
    )


CAMPAIGN_BUDGET_COLS = (
    "campaign_id", "reward_id", "budget", "spent", "remaining", "exhausted_at", "updated_at",
)  # fmt: skip


def most_spent(old: Row, new: Row) -> Row:
    """A campaign's spend only grows: the highest `spent` is its latest decision; on a tie (a
    budget changed, nothing granted) the later one (mirrors CAMPAIGN_BUDGETS' WHERE)."""

    def order(row: Row) -> tuple:
        return (row["spent"], row["updated_at"] is not None, row["updated_at"] or 0)

    kept, other = (new, old) if order(new) >= order(old) else (old, new)
    return {**kept, "reward_id": kept["reward_id"] or other["reward_id"]}


CAMPAIGN_BUDGETS = Target(
    "campaign_budgets",
    "campaign_budgets",
    CAMPAIGN_BUDGET_COLS,
    ("campaign_id",),
    most_spent,
    (
        upsert(
            "campaign_budgets AS b",
            CAMPAIGN_BUDGET_COLS,
            ("campaign_id",),
            "DO UPDATE SET reward_id = COALESCE(EXCLUDED.reward_id, b.reward_id), "
            "budget = EXCLUDED.budget, spent = EXCLUDED.spent, remaining = EXCLUDED.remaining, "
            "exhausted_at = EXCLUDED.exhausted_at, updated_at = EXCLUDED.updated_at "
            "WHERE EXCLUDED.spent > b.spent "
            "OR (EXCLUDED.spent = b.spent AND EXCLUDED.updated_at >= b.updated_at)",
        ),
    ),
)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        EVENTS_FROM_EVENT,
        EVENTS_FROM_RESULT,
        latest_wins("ledger_lines", "ledger_lines", LEDGER_COLS, ("id",), "processed_at"),
        in_sequence("wallets", WALLET_COLS),
        in_sequence("wallet_lines", WALLET_LINE_COLS, ("id",)),
        then(in_sequence("customers", CUSTOMER_COLS), refresh_eligibility(audience_only=False)),
        insert_only("tier_changes", "tier_changes", TIER_COLS, ("id",)),
        in_sequence("customer_badges", BADGE_COLS, ("customer_id", "badge_id")),
        insert_only("notifications", "notifications", NOTIFICATION_COLS, ("id",)),
        then(AUDIENCE_MEMBERS, refresh_eligibility(audience_only=True)),
        insert_only(
            "audience_membership_events",
            "audience_membership_events",
            MEMBERSHIP_EVENT_COLS,
            ("id",),
        ),  # fmt: skip
        JOURNEY_INSTANCES,
        insert_only("journey_transitions", "journey_transitions", TRANSITION_COLS, ("id",)),
        insert_only(
            "webhook_deliveries",
            "webhook_deliveries",
            DELIVERY_COLS,
            ("webhook_id", "endpoint_id", "attempt"),
        ),  # fmt: skip
        insert_only("dlq", "dlq", DLQ_COLS, ("id", "endpoint_id")),
        insert_only("admin_audit", "admin_audit", AUDIT_COLS, ("id",)),
        LEADERBOARD_SCORES,  # after customers and audience_members: eligibility reads them
        CAMPAIGN_BUDGETS,
    ]
}
