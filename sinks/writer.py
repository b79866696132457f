"""One database transaction per batch: staged bulk upserts plus the consumed offsets.

The offsets row of each partition is locked and compared with the position this sink
started the batch from; a mismatch means another instance wrote that partition meanwhile
(a zombie after a rebalance), so the whole transaction is abandoned. That, with idempotent
upserts, makes each record's effect land exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import itemgetter

import psycopg

from sinks.batch import Batch
from sinks.tables import TARGETS, Target

Offsets = dict[tuple[str, int], int]


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


def write_batch(conn: psycopg.Connection, batch: Batch, committed: Mapping) -> dict[str, int]:
    """Write `batch` and its offsets in one transaction; returns rows staged per table."""
    written: dict[str, int] = {}
    with conn.transaction():
        _check_and_store_offsets(conn, batch.offsets, committed)
        for name, target in TARGETS.items():
            rows = batch.rows.get(name)
            if rows:
                _write_target(conn, target, list(rows.values()))
                label = target.counted or target.table
                written[label] = written.get(label, 0) + len(rows)
    return written


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


def _write_target(conn: psycopg.Connection, target: Target, rows: list[dict]) -> None:
    cols = target.all_columns
    values = itemgetter(*cols)
    with conn.cursor() as cur:
        cur.execute(target.stage_ddl())
        with cur.copy(f"COPY {target.stage} ({', '.join(cols)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(values(row))
        for sql in target.sql():
            cur.execute(sql)
