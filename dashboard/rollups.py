"""Hourly rollups and the segment snapshot (migration 0005), rebuilt in the background.

Why: a 30-day chart over 10M events cannot aggregate the raw rows within a page's budget.
Every `rollup_s` the last WINDOW of hours is deleted and recomputed from the raw tables in one
transaction (rows arrive up to 72 h late and statuses change soon after an event, so hours older
than that are final; a full rebuild on start catches anything missed while it was down). Pages
read complete hours before the rebuild from here and the rest from the raw tables
(dashboard.queries). The segment snapshot is a materialized view refreshed every `segments_s`.
One dashboard at a time rebuilds (an advisory lock); a read-only database user simply gets
no rollups, and pages read the raw tables.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import tuple_row

from schemas.settings import libpq_url

log = logging.getLogger("dashboard.rollups")
WINDOW = timedelta(days=3)
LOCK = 0x10A17_D45B  # pg advisory lock key: "loyalty dashboard"
OUTCOME = "CASE status WHEN 'REJECTED' THEN 'rejected' WHEN 'FAILED' THEN 'failed' ELSE 'accepted' END"
HOUR = "date_bin('1 hour', {col}, TIMESTAMPTZ '2000-01-01 00:00:00+00')"

TABLES = ("dashboard_event_hours", "dashboard_ledger_hours", "dashboard_skip_hours")
INSERTS = {
    "dashboard_event_hours": f"""
INSERT INTO dashboard_event_hours (hour, type, outcome, events)
SELECT {HOUR.format(col="issued_at")}, type, {OUTCOME}, count(*)
FROM events WHERE kind = 'EVENT' AND issued_at >= %(cutoff)s GROUP BY 1, 2, 3""",
    "dashboard_ledger_hours": f"""
INSERT INTO dashboard_ledger_hours (hour, kind, campaign_id, amount, lines)
SELECT {HOUR.format(col="issued_at")}, kind, coalesce(campaign_id, '(none)'), sum(abs(amount)), count(*)
FROM ledger_lines WHERE issued_at >= %(cutoff)s AND kind IN ('ACCUMULATION', 'REDEMPTION', 'EXPIRY')
GROUP BY 1, 2, 3""",
    "dashboard_skip_hours": f"""
INSERT INTO dashboard_skip_hours (hour, campaign_id, reason, skips)
SELECT {HOUR.format(col="issued_at")}, coalesce(s->>'campaign_id', '(none)'),
       coalesce(s->>'reason', '(none)'), count(*)
FROM events, jsonb_array_elements(result->'rules_skipped') AS s
WHERE issued_at >= %(cutoff)s AND result->'rules_skipped' <> '[]'::jsonb
  AND jsonb_typeof(result->'rules_skipped') = 'array'
GROUP BY 1, 2, 3""",
}
CUTOFF = f"SELECT {HOUR.format(col='now() - %(window)s')}"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STATE = """
INSERT INTO dashboard_rollup_state (name, built_at, seconds) VALUES (%(name)s, now(), %(seconds)s)
ON CONFLICT (name) DO UPDATE SET built_at = excluded.built_at, seconds = excluded.seconds"""


def refresh_hours(conn: psycopg.Connection, full: bool = False) -> bool:
    """Rebuild the hours from now - WINDOW (every hour when `full`); False if another holds the lock."""
    began = time.perf_counter()
    cur = conn.cursor(row_factory=tuple_row)  # whatever the connection's row factory
    with conn.transaction():
        if not cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (LOCK,)).fetchone()[0]:
            return False
        cutoff = EPOCH if full else cur.execute(CUTOFF, {"window": WINDOW}).fetchone()[0]
        for table in TABLES:
            conn.execute(f"DELETE FROM {table} WHERE hour >= %(cutoff)s", {"cutoff": cutoff})
            conn.execute(INSERTS[table], {"cutoff": cutoff})
        conn.execute(STATE, {"name": "hours", "seconds": time.perf_counter() - began})
    return True


def refresh_segments(conn: psycopg.Connection) -> bool:
    """Recompute the segment snapshot (concurrently once populated, so readers never wait)."""
    began = time.perf_counter()
    cur = conn.cursor(row_factory=tuple_row)
    with conn.transaction():
        if not cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (LOCK + 1,)).fetchone()[0]:
            return False
        populated = cur.execute(
            "SELECT relispopulated FROM pg_class WHERE relname = 'dashboard_segments'"
        ).fetchone()[0]
    how = "CONCURRENTLY " if populated else ""
    conn.execute(f"REFRESH MATERIALIZED VIEW {how}dashboard_segments")  # not in a transaction block
    with conn.transaction():
        conn.execute(STATE, {"name": "segments", "seconds": time.perf_counter() - began})
    return True


def refresh_all(conn: psycopg.Connection, full: bool = False) -> None:
    refresh_hours(conn, full)
    refresh_segments(conn)


class Refresher:
    """A daemon thread keeping the rollups fresh; stop() ends it at the next wait."""

    def __init__(self, database_url: str, rollup_s: float, segments_s: float) -> None:
        self.url, self.rollup_s, self.segments_s = libpq_url(database_url), rollup_s, segments_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-rollups", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        full, next_segments = True, 0.0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    while not self._stop.is_set():
                        refresh_hours(conn, full)
                        full = False
                        if time.monotonic() >= next_segments:
                            refresh_segments(conn)
                            next_segments = time.monotonic() + self.segments_s
                        self._stop.wait(self.rollup_s)
            except psycopg.Error as exc:
                log.warning("rollup refresh failed; pages read the raw tables", extra={"error": str(exc)})
                self._stop.wait(self.rollup_s)
