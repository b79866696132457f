"""A backlog of events and of their results, written to their topics apart (all events
first), is read time-aligned (sinks/align.py): each event meets its result in one batch and
takes the merged insert, so no events row is updated after its insert, and every table ends
as an unaligned sink leaves it. An empty results topic holds no event back."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import psycopg
import pytest

from processors.runtime.testing import wait_for
from schemas import topics as t
from schemas.codec import encode
from schemas.settings import Settings
from schemas.topics import schema_for, topic_name
from sinks import samples
from sinks.align import AlignOptions
from sinks.sink import Sink, SinkOptions
from tests.support.pg import committed, scalar, scratch_database

pytestmark = pytest.mark.integration
TABLES = ("events", "ledger_lines", "wallet_lines", "wallets")


@pytest.fixture
def two_dbs(database_url: str) -> Iterator[tuple[str, str]]:
    with scratch_database(database_url, "sink") as one, scratch_database(database_url, "sink") as two:
        yield one, two


def produce_apart(cfg: Settings, customers: int, per_customer: int) -> int:
    """Every event, then every result, timestamped as if each result came 1 ms after its event."""
    records = samples.stream(customers, per_customer)
    base = int(time.time() * 1000) - 60_000
    producer = samples.producer(cfg)
    for wanted in (t.EVENTS_LOYALTY, t.LOYALTY_RESULTS):
        for i, (topic, key, value) in enumerate(records):
            if topic == wanted:
                producer.produce(
                    topic_name(topic, cfg), key=key.encode(), value=encode(schema_for(topic), value),
                    timestamp=base + i,  # a result's index is its event's + 1
                )  # fmt: skip
        assert producer.flush(30) == 0
    return len(records)


def drain(cfg: Settings, url: str, total: int, align: bool, group: str) -> Sink:
    """A sink reading the whole backlog into `url`, stopped once every offset is stored."""
    cfg = dataclasses.replace(cfg, database_url=url)
    options = SinkOptions(batch_size=200, linger_ms=50, group_id=cfg.topic_prefix + group,
                          dlq_relay=False, align=AlignOptions(enabled=align))  # fmt: skip
    sink = Sink(cfg, options).start()
    try:
        wait_for(lambda: committed(cfg) == total, timeout=60, what=f"{total} records committed")
    finally:
        sink.stop()
    return sink


def dump(url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url) as conn:
        sql = "SELECT to_jsonb(x)::text FROM {} x ORDER BY 1"
        tables = {tb: conn.execute(sql.format(tb)).fetchall() for tb in TABLES}
        offsets = "SELECT topic, partition, next_offset FROM sink_offsets ORDER BY 1, 2"
        return {**tables, "sink_offsets": conn.execute(offsets).fetchall()}


def events_written(url: str) -> tuple[int, int]:
    """(inserted, updated) rows of events, from PostgreSQL's statistics of this database
    (rolled-back inserts count: a straight COPY that met an existing id)."""
    sql = "SELECT n_tup_ins, n_tup_upd FROM pg_stat_user_tables WHERE relname = 'events'"
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchone()


def test_backlog_written_apart_lands_with_the_merged_insert(
    settings: Settings, two_dbs: tuple[str, str]
) -> None:
    aligned_db, unaligned_db = two_dbs
    total = produce_apart(settings, customers=60, per_customer=10)  # 600 events, 600 results
    events = total // 2

    aligned = drain(settings, aligned_db, total, align=True, group="aligned")
    unaligned = drain(settings, unaligned_db, total, align=False, group="unaligned")
    # a pair still parts where a batch is cut between an event's time and its result's
    assert aligned.merged_events >= 0.9 * events
    assert unaligned.merged_events <= 0.1 * events  # without aligning, the backlog comes apart
    # statistics reach the view shortly after the backends' transactions
    wait_for(lambda: events_written(aligned_db)[0] >= events, what="events statistics")
    assert events_written(aligned_db)[1] == events - aligned.merged_events  # no merged row updated
    assert dump(aligned_db) == dump(unaligned_db)
    assert scalar(aligned_db, "SELECT count(*) FROM events WHERE status = 'RESOLVED'") == events


def test_events_are_not_held_for_results_that_never_come(
    settings: Settings, two_dbs: tuple[str, str]
) -> None:
    url, _ = two_dbs
    producer = samples.producer(settings)
    for n in range(300):
        ev = samples.event(f"c{n % 30}", n)
        producer.produce(topic_name(t.EVENTS_LOYALTY, settings), key=ev["customer_id"].encode(),
                         value=encode(schema_for(t.EVENTS_LOYALTY), ev))  # fmt: skip
    assert producer.flush(30) == 0
    options = AlignOptions(idle_wait_ms=60_000, max_wait_ms=60_000)  # only "nothing to wait for" releases
    cfg = dataclasses.replace(settings, database_url=url)
    sink = Sink(cfg, SinkOptions(batch_size=200, linger_ms=50, dlq_relay=False, align=options)).start()
    try:
        wait_for(lambda: committed(cfg) == 300, timeout=30, what="events committed without results")
    finally:
        sink.stop()
    assert scalar(url, "SELECT count(*) FROM events WHERE status = 'PENDING'") == 300
