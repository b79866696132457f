"""Write targets: how each kind of row is reduced within a batch and upserted in PostgreSQL.

Rows are COPYed into a per-connection temp staging table, then moved with one
INSERT ... SELECT ... ON CONFLICT (or DELETE ... USING) per target. Because a single
statement may not touch the same row twice, rows are first reduced in Python to one per
natural key, with the same "latest wins" rule the SQL applies against the stored row.

Tables, columns and keys come from the one schema definition, `sinks/schema.py` (the Alembic
metadata); the upserts are SQLAlchemy Core statements compiled once at import to the SQL text
the writer sends (a Python-built statement per batch would cost more than the batch's rows).
Only the conflict rules specific to a table (a CASE, a COALESCE) are written out as SQL.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from operator import itemgetter
from typing import Any

from sqlalchemy import ColumnElement, Table, case, column, or_, select, table
from sqlalchemy import func as sa_func
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.elements import quoted_name

from sinks import schema

func_coalesce = sa_func.coalesce

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


def columns_of(tbl: Table, without: Iterable[str] = ()) -> tuple[str, ...]:
    """The table's column names in schema order, less `without`."""
    skip = set(without)
    unknown = skip - set(tbl.c.keys())
    if unknown:
        raise ValueError(f"{tbl.name} has no column {sorted(unknown)}")
    return tuple(_plain(c.name) for c in tbl.c if c.name not in skip)


def key_of(tbl: Table) -> tuple[str, ...]:
    return tuple(_plain(c.name) for c in tbl.primary_key.columns)


def _plain(name: str) -> str:
    """A column name as an interned plain str. SQLAlchemy's are `quoted_name`, a str subclass
    that a dict lookup compares the slow way: the writer's and the batch's getters of row
    values by these names took about twice as long (offline, an events row: 1.8 -> 0.9 us)."""
    return sys.intern(str(name))


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
    # a row whose key is new is the one its upsert inserts (columns as staged, no extra stage
    # column or statement): the writer COPYs straight into the table and takes the stage only
    # when a key exists (see sinks/writer.py _write_target). For insert-mostly tables.
    direct: bool = False
    source: Table | None = field(default=None, repr=False, compare=False)  # else schema's

    def __post_init__(self) -> None:
        """A target names only what the schema has: its table, columns and primary key."""
        tbl = self.source if self.source is not None else schema.metadata.tables[self.table]
        missing = set(self.columns) - set(tbl.c.keys())
        if missing:
            raise ValueError(f"target {self.name}: {self.table} has no column {sorted(missing)}")
        if self.key != key_of(tbl):
            raise ValueError(f"target {self.name}: key {self.key} is not {self.table}'s {key_of(tbl)}")
        if self.direct and (self.extra_stage_columns or len(self.statements) != 1):
            raise ValueError(f"target {self.name}: a direct COPY needs one upsert and no extra column")

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

    @cached_property
    def stage_types(self) -> tuple[str, ...]:
        """The PostgreSQL type of each staged column (all_columns), from the schema: what a
        binary COPY into the stage encodes each value as."""
        tbl = self.source if self.source is not None else schema.metadata.tables[self.table]
        return type_names(tbl, self.columns) + tuple(typ for _, typ in self.extra_stage_columns)

    def sql(self) -> list[str]:
        return [s.format(stage=self.stage) for s in self.statements]


def type_names(tbl: Table, columns: Iterable[str]) -> tuple[str, ...]:
    """PostgreSQL type names of `columns` of `tbl` (e.g. "timestamp with time zone")."""
    dialect = postgresql.dialect()
    return tuple(tbl.c[c].type.compile(dialect=dialect).lower() for c in columns)


def _stage(columns: Iterable[str]):
    """The staging table as a Core table clause; its name stays the `{stage}` placeholder."""
    return table(quoted_name("{stage}", False), *[column(c) for c in columns])


def compile_sql(stmt) -> str:
    return str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


def staged_insert(tbl: Table, columns: tuple[str, ...]):
    """INSERT INTO tbl (columns) SELECT columns FROM {stage}, as a Core statement."""
    stage = _stage(columns)
    return insert(tbl).from_select(columns, select(*[stage.c[c] for c in columns]))


def upsert(tbl: Table, columns: tuple[str, ...], set_: Callable | None = None,
           where: Callable | None = None) -> str:  # fmt: skip
    """The staged upsert on the table's primary key: DO NOTHING, or DO UPDATE SET
    `set_(table, excluded)` WHERE `where(table, excluded)`."""
    stmt = staged_insert(tbl, columns)
    if set_ is None:
        return compile_sql(stmt.on_conflict_do_nothing(index_elements=key_of(tbl)))
    ex = stmt.excluded
    return compile_sql(
        stmt.on_conflict_do_update(
            index_elements=key_of(tbl),
            set_=set_(tbl, ex),
            where=where(tbl, ex) if where else None,
        )
    )


def set_excluded(columns: Iterable[str], key: Iterable[str]) -> Callable:
    keys = set(key)
    return lambda tbl, ex: {c: ex[c] for c in columns if c not in keys}


def insert_only(name: str, tbl: Table) -> Target:
    """Append-style tables keyed by a natural id: a replay is a no-op."""
    columns = columns_of(tbl)
    return Target(name, tbl.name, columns, key_of(tbl), keep_first, (upsert(tbl, columns),), source=tbl,
                  direct=True)  # fmt: skip


def latest_wins(name: str, tbl: Table, col: str, direct: bool = False) -> Target:
    """Current-state tables: never go backwards in `col` (e.g. processed_at). `direct`: keys
    are mostly new (ledger lines: a replay or a re-emitted line updates one)."""
    columns, key = columns_of(tbl), key_of(tbl)
    statement = upsert(tbl, columns, set_excluded(columns, key),
                       lambda t, ex: or_(t.c[col].is_(None), ex[col] >= t.c[col]))  # fmt: skip
    return Target(name, tbl.name, columns, key, latest_by(col), (statement,), source=tbl, direct=direct)


def _newer_in_sequence(t: Table, ex) -> ColumnElement:
    return case(
        (ex.sequence.is_not(None) & t.c.sequence.is_not(None), ex.sequence >= t.c.sequence),
        else_=ex.updated_at >= t.c.updated_at,
    )


def in_sequence(tbl: Table) -> Target:
    """Per-customer state: the greatest processor `sequence` wins (see latest_in_sequence)."""
    columns, key = columns_of(tbl), key_of(tbl)
    statement = upsert(tbl, columns, set_excluded(columns, key), _newer_in_sequence)
    return Target(tbl.name, tbl.name, columns, key, latest_in_sequence, (statement,), source=tbl)


events = schema.events
# an event's lifecycle times (schemas/event_times.py), kept once known
TIME_COLS = ("processing_at", "resolved_at", "cancelled_at", "expired_at", "reversed_at")
# what an event record stages, and what its result stages (the rest of each is the other's)
EVENT_COLS = columns_of(events, without=("reason", "points", "result", "processed_at",
                                         "config_version", *TIME_COLS))  # fmt: skip
RESULT_COLS = columns_of(events, without=("tags", "metadata", "fulfilled", "sends"))
_FROM_EVENT = set(EVENT_COLS) - {"id", "status", "sends"}
_KEEP_FROM_EVENT = ("reference", "brand_id", "properties", "target_event_id", "issued_at",
                    "received_at")  # fmt: skip


def _event_sets(t: Table, ex) -> dict:
    """A row so far written only by its result (sends = 0) takes the event's fields; a repeat
    keeps the first send's (the applied one) and is only counted."""
    first = t.c.sends == 0
    sets: dict = {c: case((first, ex[c]), else_=t.c[c]) for c in EVENT_COLS if c in _FROM_EVENT}
    sets["status"] = case((t.c.processed_at.is_(None) & first, ex.status), else_=t.c.status)
    sets["sends"] = t.c.sends + ex.sends
    return sets


EVENTS_FROM_EVENT = Target(
    "events_from_event",
    "events",
    EVENT_COLS,
    key_of(events),
    fold_sends,
    (upsert(events, EVENT_COLS, _event_sets),),
    direct=True,  # an event id is new but for a repeat, a replay or a result read first
)


def latest_result(old: Row, new: Row) -> Row:
    """The latest result of an event wins (as the SQL's WHERE), keeping a time the other one
    knows and it does not (a result written before the processor kept every time)."""
    kept, other = (new, old) if latest_by("processed_at")(old, new) is new else (old, new)
    return {**kept, **{c: kept[c] or other[c] for c in TIME_COLS}}


_RESULT_SETS = ("status", "reason", "points", "result", "processed_at", "config_version")


def _result_sets(t: Table, ex) -> dict:
    # the result names the event as applied: its fields win over a repeat's
    sets: dict = {c: ex[c] for c in _RESULT_SETS}
    sets.update({c: func_coalesce(ex[c], t.c[c]) for c in _KEEP_FROM_EVENT + TIME_COLS})
    return sets


EVENTS_FROM_RESULT = Target(
    "events_from_result",
    "events",
    RESULT_COLS,
    key_of(events),
    latest_result,
    (
        upsert(events, RESULT_COLS, _result_sets,
               lambda t, ex: or_(t.c.processed_at.is_(None), ex.processed_at >= t.c.processed_at)),
    ),  # fmt: skip
    counted="events",
    direct=True,  # ids new when results are read before their events (a backlog); else the
    # first row conflicts and costs little
)

# An event and its result in one batch, for an id not yet in `events`: one INSERT of the row
# the two upserts above would leave (events_from_event's insert, then events_from_result's
# update of it) instead of an insert and an update of a row with seven indexes. The sink
# first COPYs the merged rows (merged_row) straight into events in a savepoint: when every id
# is new (live traffic, a backlog read in step) that is the whole insert, one COPY. When an id
# exists (a replay, a repeat, a concurrent writer) the COPY fails, and the stage takes over:
# it holds both rows side by side (the result's columns prefixed r_), MERGED_INSERT inserts
# the new ids and the rest is left to the two upserts (RETURNING tells which ids went in).
# A value the merged row does not keep (the event's status, properties the result replaces)
# is not sent by the COPY, so only the stage path parses it.
MERGED_STAGE = "_stage_events_merged"
MERGED_STAGE_COLUMNS = EVENT_COLS + tuple(f"r_{c}" for c in RESULT_COLS)


# the merged row's columns, as MERGED_INSERT writes them
MERGED_COLS = EVENT_COLS + tuple(c for c in RESULT_COLS if c not in EVENT_COLS)
MERGED = "events_merged"  # the merged rows' name in a batch's prepared COPY data (writer.prepare)


def _merged_source(col: str) -> tuple[str, str | None]:
    """The stage column the merged row takes `col` from, and the one it falls back to when
    that is NULL: the one rule behind both MERGED_INSERT and merged_row()."""
    if col in _KEEP_FROM_EVENT:
        return f"r_{col}", col
    if col in _RESULT_SETS or col in TIME_COLS:
        return f"r_{col}", None
    return col, None


def _merged_value(stage, col: str) -> ColumnElement:
    first, fallback = _merged_source(col)
    return stage.c[first] if fallback is None else func_coalesce(stage.c[first], stage.c[fallback])


def _merged_insert() -> str:
    stage = table(MERGED_STAGE, *[column(c) for c in MERGED_STAGE_COLUMNS])
    stmt = insert(events).from_select(MERGED_COLS, select(*[_merged_value(stage, c) for c in MERGED_COLS]))
    return compile_sql(stmt.on_conflict_do_nothing(index_elements=key_of(events)).returning(events.c.id))


# The same rows as the sink COPYs them straight into events: the columns taken from the event
# first, then those taken from the result, so a row is two getters' tuples end to end.
_FROM_EVENT_COLS = tuple(c for c in MERGED_COLS if _merged_source(c)[0] == c)
_FROM_RESULT_COLS = tuple(c for c in MERGED_COLS if _merged_source(c)[0] != c)
MERGED_COPY_COLS = _FROM_EVENT_COLS + _FROM_RESULT_COLS
MERGED_COPY_TYPES = type_names(events, MERGED_COPY_COLS)
_from_event, _from_result = itemgetter(*_FROM_EVENT_COLS), itemgetter(*_FROM_RESULT_COLS)
# (position in a merged row, the event's column) of each value the event gives when the result's is None
_FALLBACKS = tuple(
    (i, fb) for i, c in enumerate(MERGED_COPY_COLS) if (fb := _merged_source(c)[1]) is not None
)
_fallback_values = itemgetter(*[i for i, _ in _FALLBACKS])


def merged_row(event: Row, result: Row) -> tuple:
    """The events row MERGED_INSERT makes of an event's row and its result's, in
    MERGED_COPY_COLS order: what the sink COPYs straight into events when every id is new."""
    row = _from_event(event) + _from_result(result)
    if None in _fallback_values(row):
        values = list(row)
        for i, col in _FALLBACKS:
            if values[i] is None:
                values[i] = event[col]
        row = tuple(values)
    return row


MERGED_STAGE_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {MERGED_STAGE} ON COMMIT DELETE ROWS AS SELECT "
    + ", ".join([f"e.{c}" for c in EVENT_COLS] + [f"r.{c} AS r_{c}" for c in RESULT_COLS])
    + " FROM events e, events r WITH NO DATA"
)
MERGED_INSERT = _merged_insert()
MERGED_STAGE_TYPES = type_names(events, EVENT_COLS) + type_names(events, RESULT_COLS)
# NOT NULL columns a result must carry for the merged insert, which gives every value and so
# takes no server default (the upserts' insert checks the same)
RESULT_NOT_NULL = tuple(c for c in RESULT_COLS if not events.c[c].nullable and not events.c[c].primary_key)

MEMBER_COLS = columns_of(schema.audience_members)
_MEMBER_LIST = ", ".join(MEMBER_COLS)
AUDIENCE_MEMBERS = Target(
    "audience_members",
    "audience_members",
    MEMBER_COLS,
    key_of(schema.audience_members),
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

INSTANCE_COLS = columns_of(schema.journey_instances)
_INSTANCE_LIST = ", ".join(INSTANCE_COLS)
# an instance first seen through a TRANSITION or ACTION (status NULL) is ACTIVE
_INSTANCE_SELECT = _INSTANCE_LIST.replace("status", "COALESCE(status, 'ACTIVE')", 1)
JOURNEY_INSTANCES = Target(
    "journey_instances",
    "journey_instances",
    INSTANCE_COLS,
    key_of(schema.journey_instances),
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


LEADERBOARD_COLS = columns_of(schema.leaderboard_scores, without=("eligible",))  # computed
_ELIGIBLE = "leaderboard_eligible({t}customer_id, {t}audience_id, {t}consent_purpose)"
_LB_LIST = ", ".join(LEADERBOARD_COLS)
# scores add up; eligibility is computed against the customers and audience_members rows
# (written earlier in the same batch: TARGETS order) and refreshed when those change
LEADERBOARD_SCORES = Target(
    "leaderboard_scores",
    "leaderboard_scores",
    LEADERBOARD_COLS,
    key_of(schema.leaderboard_scores),
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


CAMPAIGN_BUDGET_COLS = columns_of(schema.campaign_budgets)


def most_spent(old: Row, new: Row) -> Row:
    """A campaign's spend only grows: the highest `spent` is its latest decision; on a tie (a
    budget changed, nothing granted) the later one (mirrors CAMPAIGN_BUDGETS' WHERE)."""

    def order(row: Row) -> tuple:
        return (row["spent"], row["updated_at"] is not None, row["updated_at"] or 0)

    kept, other = (new, old) if order(new) >= order(old) else (old, new)
    return {**kept, "reward_id": kept["reward_id"] or other["reward_id"]}


def _budget_sets(t: Table, ex) -> dict:
    sets: dict = {c: ex[c] for c in CAMPAIGN_BUDGET_COLS if c != "campaign_id"}
    sets["reward_id"] = func_coalesce(ex.reward_id, t.c.reward_id)
    return sets


CAMPAIGN_BUDGETS = Target(
    "campaign_budgets",
    "campaign_budgets",
    CAMPAIGN_BUDGET_COLS,
    key_of(schema.campaign_budgets),
    most_spent,
    (
        upsert(schema.campaign_budgets, CAMPAIGN_BUDGET_COLS, _budget_sets,
               lambda t, ex: or_(ex.spent > t.c.spent,
                                 (ex.spent == t.c.spent) & (ex.updated_at >= t.c.updated_at))),
    ),  # fmt: skip
)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        EVENTS_FROM_EVENT,
        EVENTS_FROM_RESULT,
        latest_wins("ledger_lines", schema.ledger_lines, "processed_at", direct=True),
        in_sequence(schema.wallets),
        in_sequence(schema.wallet_lines),
        then(in_sequence(schema.customers), refresh_eligibility(audience_only=False)),
        insert_only("tier_changes", schema.tier_changes),
        in_sequence(schema.customer_badges),
        insert_only("notifications", schema.notifications),
        then(AUDIENCE_MEMBERS, refresh_eligibility(audience_only=True)),
        insert_only("audience_membership_events", schema.audience_membership_events),
        JOURNEY_INSTANCES,
        insert_only("journey_transitions", schema.journey_transitions),
        insert_only("webhook_deliveries", schema.webhook_deliveries),
        insert_only("dlq", schema.dlq),
        insert_only("admin_audit", schema.admin_audit),
        LEADERBOARD_SCORES,  # after customers and audience_members: eligibility reads them
        CAMPAIGN_BUDGETS,
    ]
}
