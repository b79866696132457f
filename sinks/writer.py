"""One database transaction per batch: staged bulk upserts plus the consumed offsets.

The offsets row of each partition is locked and compared with the position this sink
started the batch from; a mismatch means another instance wrote that partition meanwhile
(a zombie after a rebalance), so the whole transaction is abandoned. That, with idempotent
upserts, makes each record's effect land exactly once.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter

import orjson
import psycopg
from psycopg.adapt import Dumper
from psycopg.copy import Copy, FileWriter
from psycopg.postgres import types as pg_types
from psycopg.pq import Format
from psycopg.types.json import set_json_dumps

from sinks.batch import Batch, Encoded, Entry, Rows, put, reduce_entries
from sinks.rejects import Reject, is_data_error, write_rejects
from sinks.tables import (
    EVENT_COLS,
    EVENTS_FROM_EVENT,
    EVENTS_FROM_RESULT,
    MERGED,
    MERGED_COPY_COLS,
    MERGED_COPY_TYPES,
    MERGED_INSERT,
    MERGED_STAGE,
    MERGED_STAGE_COLUMNS,
    MERGED_STAGE_DDL,
    MERGED_STAGE_TYPES,
    RESULT_COLS,
    RESULT_NOT_NULL,
    TARGETS,
    Target,
    merged_row,
)

Offsets = dict[tuple[str, int], int]
event_values, result_values = itemgetter(*EVENT_COLS), itemgetter(*RESULT_COLS)
result_not_null = itemgetter(*RESULT_NOT_NULL)


class Fenced(RuntimeError):
    """The stored offsets moved under us: re-read them and start over."""


class Reconnecting:
    """A PostgreSQL connection opened on first use and opened again after it was closed
    (the sink's reader and its writer thread each hold one; an outage closes it)."""

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self._connect = connect
        self._conn: psycopg.Connection | None = None

    def get(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def open(self) -> psycopg.Connection | None:
        """The connection if it is open, without connecting (None: closed or never opened)."""
        return None if self._conn is None or self._conn.closed else self._conn

    def close(self) -> None:
        """Close quietly: after a failure the connection may already be broken."""
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None


def load_offsets(conn: psycopg.Connection, topics: list[str]) -> Offsets:
    rows = conn.execute(
        "SELECT topic, partition, next_offset FROM sink_offsets WHERE topic = ANY(%s)",
        (topics,),
    ).fetchall()
    return {(t, p): o for t, p, o in rows}


@dataclass
class Written:
    """What one committed batch wrote: rows staged per table and the rejects it stored."""

    rows: dict[str, int] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    merged: int = 0  # events rows inserted with their result (MERGED_INSERT), not updated later


def write_batch(conn: psycopg.Connection, batch: Batch, committed: Mapping) -> Written:
    """Write `batch`, its rejects and its offsets in one transaction.

    The whole batch is tried first in a savepoint; if PostgreSQL refuses a row for a data
    reason, the batch is split until each refused row is isolated and quarantined, and every
    other row is written. Any other error (connection, fencing) rolls everything back.
    """
    out = Written(rejects=list(batch.rejects))
    with conn.transaction():
        _check_and_store_offsets(conn, batch.offsets, committed)
        try:
            with conn.transaction():
                out.merged = _write_rows(conn, batch.rows, out.rows, encoded=batch.encoded)
        except Exception as exc:  # noqa: BLE001 - only data errors are handled here
            if not is_data_error(exc):
                raise
            out.rows.clear()
            _isolate(conn, batch.entries, out)
        write_rejects(conn, out.rejects, batch.config_version)
    return out


def _write_rows(conn: psycopg.Connection, rows: Rows, written: dict[str, int], clear: bool = False,
                encoded: Encoded | None = None) -> int:  # fmt: skip
    """`encoded`: the targets' COPY data made by prepare() (the rows of a whole bucket).
    Returns how many events rows the merged insert wrote."""
    merged = _insert_merged_events(conn, rows, clear, encoded.get(MERGED) if encoded else None)
    for name, target in TARGETS.items():
        bucket = rows.get(name)
        if bucket:
            ready = None
            if merged and name in (EVENTS_FROM_EVENT.name, EVENTS_FROM_RESULT.name):
                left = [row for key, row in bucket.items() if key not in merged]
            else:
                left = list(bucket.values())
                ready = encoded.get(name) if encoded else None
            if left:
                _write_target(conn, target, left, clear, ready)
            label = target.counted or target.table
            written[label] = written.get(label, 0) + len(bucket)
    return len(merged)


def _merged_pairs(rows: Rows) -> list[tuple[dict, dict]]:
    """Each event whose result is in the same batch and carries every NOT NULL value the
    merged row needs, with that result."""
    events, results = rows.get(EVENTS_FROM_EVENT.name), rows.get(EVENTS_FROM_RESULT.name)
    if not events or not results:
        return []
    return [
        (row, result)
        for key, row in events.items()
        if (result := results.get(key)) is not None and None not in result_not_null(result)
    ]


def prepare_merged(conn: psycopg.Connection, rows: Rows) -> tuple[list[tuple], bytes | None] | None:
    """The merged events rows of `rows` (merged_row) and their binary COPY data; None if no
    event has its result in the batch."""
    merged = [merged_row(event, result) for event, result in _merged_pairs(rows)]
    return (merged, encode_binary(conn, MERGED_COPY_TYPES, merged)) if merged else None


def _insert_merged_events(conn: psycopg.Connection, rows: Rows, clear: bool,
                          ready: tuple[list[tuple], bytes | None] | None = None) -> set[tuple]:  # fmt: skip
    """Insert in one row each event whose result is in the same batch and whose id is new
    (see MERGED_INSERT); returns the keys inserted, which the two upserts then skip.
    `ready`: prepare_merged()'s rows and data if the reader made them."""
    ready = ready or prepare_merged(conn, rows)
    if ready is None:
        return set()
    with conn.cursor() as cur:
        if copy_new(cur, "events", MERGED_COPY_COLS, MERGED_COPY_TYPES, *ready):
            return {(row[0],) for row in ready[0]}  # MERGED_COPY_COLS starts with the key, id
    both = [event_values(event) + result_values(result) for event, result in _merged_pairs(rows)]
    with conn.cursor() as cur:
        cur.execute(MERGED_STAGE_DDL)
        copy_rows(cur, MERGED_STAGE, MERGED_STAGE_COLUMNS, MERGED_STAGE_TYPES, both)
        cur.execute(MERGED_INSERT)
        inserted = {(found,) for (found,) in cur.fetchall()}
        if clear:
            cur.execute(f"DELETE FROM {MERGED_STAGE}")
    return inserted


def _isolate(conn: psycopg.Connection, entries: list[Entry], out: Written) -> None:
    """Write `entries` in savepoints, halving on a data error down to one record's rows."""
    if not entries:
        return
    written: dict[str, int] = {}
    try:
        with conn.transaction():
            _write_rows(conn, reduce_entries(entries), written, clear=True)
    except Exception as exc:  # noqa: BLE001 - only data errors are handled here
        if not is_data_error(exc):
            raise
        if len(entries) == 1:
            _isolate_rows(conn, entries[0], out)
        else:
            mid = len(entries) // 2
            _isolate(conn, entries[:mid], out)
            _isolate(conn, entries[mid:], out)
        return
    for label, n in written.items():
        out.rows[label] = out.rows.get(label, 0) + n


def _isolate_rows(conn: psycopg.Connection, entry: Entry, out: Written) -> None:
    """One record: write each of its rows alone; quarantine the ones refused."""
    for name, row in entry.pairs:
        try:
            with conn.transaction():
                rows: Rows = {}
                put(rows, name, row)
                _write_rows(conn, rows, out.rows, clear=True)
        except Exception as exc:  # noqa: BLE001 - only data errors are handled here
            if not is_data_error(exc):
                raise
            table = TARGETS[name].table
            out.rejects.append(Reject.refused(entry.topic, entry.partition, entry.offset, table,
                                              entry.value, exc, entry.original))  # fmt: skip


def _check_and_store_offsets(conn: psycopg.Connection, offsets: Offsets, committed: Mapping) -> None:
    """Advance each partition's stored offset only from the value this batch started at.

    A conditional UPDATE (or an INSERT for a partition never stored) row-locks the offset, so
    of two writers racing from the same start exactly one succeeds; the other is Fenced.
    """
    moves = [(t, p, committed.get((t, p)), o) for (t, p), o in sorted(offsets.items())]
    with conn.cursor() as cur:
        updates = [(t, p, start, new) for t, p, start, new in moves if start is not None]
        inserts = [(t, p, new) for t, p, start, new in moves if start is None]
        done = 0
        if updates:
            cur.executemany(
                "UPDATE sink_offsets SET next_offset = %s, updated_at = now() "
                "WHERE topic = %s AND partition = %s AND next_offset = %s",
                [(new, t, p, start) for t, p, start, new in updates],
            )
            done += cur.rowcount
        if inserts:
            cur.executemany(
                "INSERT INTO sink_offsets (topic, partition, next_offset) VALUES (%s, %s, %s) "
                "ON CONFLICT (topic, partition) DO NOTHING",
                inserts,
            )
            done += cur.rowcount
    if done != len(moves):
        raise Fenced(f"{len(moves) - done} of {len(moves)} partitions moved under us")


def prepare(conn: psycopg.Connection, batch: Batch) -> None:
    """Make each target's COPY data now, in the sink's reader thread (`conn`: its connection,
    used for its adapters only, nothing is sent): the writer thread, whose COPYs and upserts
    are the critical path, then only talks to PostgreSQL. Events and results of one batch
    are merged here (prepare_merged); the rest of their rows is left to the writer, since
    which remain depends on the ids the merged insert finds new."""
    if EVENTS_FROM_EVENT.name in batch.rows and EVENTS_FROM_RESULT.name in batch.rows:
        skip = (EVENTS_FROM_EVENT.name, EVENTS_FROM_RESULT.name)
        if (merged := prepare_merged(conn, batch.rows)) is not None:
            batch.encoded[MERGED] = merged
    else:
        skip = ()
    for name, bucket in batch.rows.items():
        if bucket and name not in skip:
            target = TARGETS[name]
            tuples = list(map(itemgetter(*target.all_columns), bucket.values()))
            batch.encoded[name] = (tuples, encode_binary(conn, target.stage_types, tuples))


def _write_target(conn: psycopg.Connection, target: Target, rows: list[dict], clear: bool = False,
                  ready: tuple[list[tuple], bytes | None] | None = None) -> None:  # fmt: skip
    """COPY `rows` into the target's stage and move them; `clear` empties the stage after
    (needed when one transaction writes the same target more than once).

    A `direct` target's rows are first COPYed straight into its table in a savepoint: when
    every key is new, that is the upsert's insert, in one multi-row COPY instead of a stage
    COPY then an INSERT ... SELECT ... ON CONFLICT (offline, ledger_lines with its indexes:
    9.8 -> 7.6 us of PostgreSQL CPU per row). A key that exists (a replay, a repeat, an event
    whose result was read first or the reverse) fails it with a unique violation, and the rows
    take the stage."""
    if ready is None:
        tuples = list(map(itemgetter(*target.all_columns), rows))
        data = encode_binary(conn, target.stage_types, tuples)  # once, for either COPY
    else:
        tuples, data = ready
    with conn.cursor() as cur:
        if target.direct and copy_new(cur, target.table, target.columns, target.stage_types, tuples, data):
            return
        cur.execute(target.stage_ddl())
        copy_rows(cur, target.stage, target.all_columns, target.stage_types, tuples, data)
        for sql in target.sql():
            cur.execute(sql)
        if clear:
            cur.execute(f"DELETE FROM {target.stage}")


def _json_text(value: object) -> str:
    """jsonb values are JSON text already (sinks/mapping.py): sent as they are."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class JsonbText(Dumper):
    """A jsonb value in binary COPY from the JSON text the mapping made: the version byte and
    the text. psycopg's own jsonb dumper gets there in three Python calls per value (its
    wrapper check, the dumps, the encode); this is one, for every jsonb value of a batch."""

    format = Format.BINARY
    oid = pg_types["jsonb"].oid

    def dump(self, obj: object) -> bytes:
        return b"\x01" + (obj.encode() if isinstance(obj, str) else orjson.dumps(obj))


def encode_binary(conn: psycopg.Connection, types: tuple[str, ...], rows: list[tuple]) -> bytes | None:
    """`rows` in binary COPY format for columns of `types`, or None when a value does not fit
    its column's binary form (a str for a number, a naive datetime...): the text COPY then
    sends them as before and PostgreSQL judges them (a refused row is quarantined).

    Binary is about half the client CPU of text per row (no float, timestamp and escaping
    text formatting) and cheaper for PostgreSQL to read (no timestamptz / float parsing).
    psycopg's FileWriter formats the rows with the connection's adapters, no COPY running."""
    out = io.BytesIO()
    with conn.cursor() as fmt:
        set_json_dumps(_json_text, fmt)  # json columns
        fmt.adapters.register_dumper(None, JsonbText)  # jsonb, looked up by oid (set_types)
        try:
            with Copy(fmt, binary=True, writer=FileWriter(out)) as copy:
                copy.set_types(list(types))
                for values in rows:
                    copy.write_row(values)
        except (TypeError, ValueError, OverflowError, psycopg.DataError):
            return None
    return out.getvalue()


def copy_new(cur: psycopg.Cursor, table: str, columns: tuple[str, ...], types: tuple[str, ...],
             tuples: list[tuple], data: bytes | None) -> bool:  # fmt: skip
    """COPY `tuples` straight into `table` in a savepoint: True when every key was new, False
    when one exists (a unique violation, rolled back to the savepoint: the upsert decides)."""
    try:
        with cur.connection.transaction():
            copy_rows(cur, table, columns, types, tuples, data)
        return True
    except psycopg.errors.UniqueViolation:
        return False


def copy_rows(cur: psycopg.Cursor, stage: str, columns: tuple[str, ...], types: tuple[str, ...],
              tuples: list[tuple], data: bytes | None | bool = False) -> None:  # fmt: skip
    """COPY `tuples` (values in `columns` order) into `stage`: binary when every value fits,
    else text. `data`: their encode_binary() if already made (False: not yet)."""
    if data is False:
        data = encode_binary(cur.connection, types, tuples)
    cols = ", ".join(columns)
    if data is not None:
        with cur.copy(f"COPY {stage} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(data)
        return
    with cur.copy(f"COPY {stage} ({cols}) FROM STDIN") as copy:
        for row in tuples:
            copy.write_row(row)
