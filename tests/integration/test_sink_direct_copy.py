"""Insert-mostly targets (events from events, ledger lines, append-only tables) are COPYed
straight into their table when every key is new, and take the staged upsert when one exists
(sinks/writer.py _write_target): the rows are the upsert's either way."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from schemas import topics as t
from schemas.codec import default_codec
from schemas.topics import schema_for
from sinks import samples
from sinks.batch import Batch
from sinks.mapping import Source
from sinks.writer import write_batch
from tests.support.pg import scratch_database

pytestmark = pytest.mark.integration


@pytest.fixture
def db(database_url: str) -> Iterator[str]:
    with scratch_database(database_url, "sink") as url:
        yield url


def decoded(topic: str, value: dict) -> tuple[str, dict]:
    codec = default_codec()
    return topic, codec.decode(codec.encode(schema_for(topic), value), schema_for(topic))


def write(conn: psycopg.Connection, recs: list[tuple[str, dict]], partition: int) -> None:
    """One batch; each call on partitions of its own, so no stored offset to start from."""
    batch = Batch()
    for offset, (topic, value) in enumerate(recs):
        batch.add(value, Source(topic, partition, offset), topic)
    assert not write_batch(conn, batch, {}).rejects


def staged(conn: psycopg.Connection, target: str) -> bool:
    """Whether this connection has used the target's stage (a temp table made on first use)."""
    return conn.execute("SELECT to_regclass(%s)", (f"pg_temp._stage_{target}",)).fetchone()[0] is not None


def test_new_keys_skip_the_stage_and_an_existing_key_takes_the_upsert(db: str) -> None:
    events = [samples.event("ann", n) for n in range(3)]
    first = [decoded(t.EVENTS_LOYALTY, ev) for ev in events]
    first += [decoded(t.LOYALTY_RESULTS, samples.result(ev, 1.0, n + 1.0)) for n, ev in enumerate(events)]
    with psycopg.connect(db, autocommit=True) as conn:
        write(conn, first[:3], 0)  # events only: a backlog batch of one topic
        write(conn, first[3:], 1)
        assert not staged(conn, "events_from_event") and not staged(conn, "ledger_lines")

        # a repeat of ann's first event beside a new one, and her first ledger line re-emitted
        # by a later result: the whole target goes through the upsert
        later = samples.result(events[0], 7.0, 7.0, processed_at=events[0]["received_at"] + 60_000)
        second = [decoded(t.EVENTS_LOYALTY, events[0]), decoded(t.EVENTS_LOYALTY, samples.event("bob", 1))]
        write(conn, second + [decoded(t.LOYALTY_RESULTS, later)], 2)
        assert staged(conn, "events_from_event") and staged(conn, "ledger_lines")

        sends = dict(conn.execute("SELECT customer_id || reference, sends FROM events").fetchall())
        assert sends == {"annref-0": 2, "annref-1": 1, "annref-2": 1, "bobref-1": 1}
        amounts = conn.execute("SELECT amount FROM ledger_lines ORDER BY issued_at").fetchall()
        assert amounts == [(7.0,), (1.0,), (1.0,)]  # the later result's line won


def test_a_result_read_before_its_event_goes_straight_and_the_event_takes_the_upsert(db: str) -> None:
    ev = samples.event("cy", 1)
    with psycopg.connect(db, autocommit=True) as conn:
        write(conn, [decoded(t.LOYALTY_RESULTS, samples.result(ev, 3.0, 3.0))], 0)
        assert not staged(conn, "events_from_result")
        write(conn, [decoded(t.EVENTS_LOYALTY, ev)], 1)
        assert staged(conn, "events_from_event")
        sql = "SELECT status, points, sends, tags FROM events WHERE customer_id = 'cy'"
        assert conn.execute(sql).fetchall() == [("RESOLVED", 3.0, 1, [])]
