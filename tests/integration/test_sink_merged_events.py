"""An event and its result in one batch are inserted as one events row (sinks/tables.py,
MERGED_INSERT); the row must be the one the event's insert and then the result's update leave,
so the tables are compared with the same records written one record per batch."""

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
from tests.support.pg import query, scratch_database

pytestmark = pytest.mark.integration
TABLES = ("events", "ledger_lines", "wallet_lines", "wallets")


@pytest.fixture(scope="module")
def two_dbs(database_url: str) -> Iterator[tuple[str, str]]:
    with scratch_database(database_url, "sink") as one, scratch_database(database_url, "sink") as two:
        yield one, two


def records() -> list[tuple[str, dict]]:
    """Events with their results, a repeated send, a result before its event, a v1 result, a
    tracking event and an event whose result says other properties; as the sink decodes them."""
    out: list[tuple[str, dict]] = []
    for n in range(6):
        ev = samples.event("ann", n, amount=float(n + 1), brand_id="b1" if n % 2 else None)
        res = samples.result(ev, float(n + 1), float(n + 1), v1=n == 3)
        pair = [(t.EVENTS_LOYALTY, ev), (t.LOYALTY_RESULTS, res)]
        out += pair[::-1] if n == 2 else pair
        if n == 4:
            out.append((t.EVENTS_LOYALTY, ev))  # a repeat: counted in sends
    other = samples.event("bob", 1)
    res = samples.result({**other, "properties": '{"amount": 99}', "reference": None}, 5.0, 5.0)
    out += [(t.EVENTS_LOYALTY, other), (t.LOYALTY_RESULTS, res)]
    out.append((t.EVENTS_TRACKING, samples.event("cy", 1, type_="PAGE_VIEW", path="tracking")))
    codec = default_codec()
    return [(topic, codec.decode(codec.encode(schema_for(topic), v), schema_for(topic))) for topic, v in out]


def pairs(customer: str, n: int) -> list[tuple[str, dict]]:
    """`n` events of `customer`, each followed by its result, as the sink decodes them."""
    codec = default_codec()
    recs = []
    for i in range(n):
        ev = samples.event(customer, i)
        for topic, value in ((t.EVENTS_LOYALTY, ev), (t.LOYALTY_RESULTS, samples.result(ev, 1.0, i + 1.0))):
            recs.append((topic, codec.decode(codec.encode(schema_for(topic), value), schema_for(topic))))
    return recs


def one_batch(recs: list[tuple[str, dict]], offset: int) -> Batch:
    batch = Batch()
    for i, (topic, value) in enumerate(recs, start=offset):
        batch.add(value, Source(topic, 0, i), topic)
    return batch


def write(url: str, recs: list[tuple[str, dict]], per_batch: int, offset: int) -> int:
    with psycopg.connect(url) as conn:
        for i in range(0, len(recs), per_batch):
            batch = Batch()
            for topic, value in recs[i : i + per_batch]:
                batch.add(value, Source(topic, 0, offset), topic)
                offset += 1
            assert not write_batch(conn, batch, {}).rejects
            conn.commit()
            with conn.cursor() as cur:
                cur.execute("DELETE FROM sink_offsets")  # each write here starts afresh
            conn.commit()
    return offset


def dump(url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url) as conn:
        sql = "SELECT to_jsonb(x)::text FROM {} x ORDER BY 1"
        return {tb: conn.execute(sql.format(tb)).fetchall() for tb in TABLES}


def test_one_batch_writes_the_rows_of_one_record_per_batch(two_dbs: tuple[str, str]) -> None:
    together, apart = two_dbs
    recs = records()
    write(together, recs, per_batch=len(recs), offset=0)
    write(apart, recs, per_batch=1, offset=0)
    assert dump(together) == dump(apart)
    rows = dict(query(together, "SELECT reference, sends FROM events WHERE customer_id = 'ann'"))
    assert rows["ref-4"] == 2 and rows["ref-0"] == 1
    # written again (a replay of both): every id exists, so the two upserts apply as before
    write(together, recs, per_batch=len(recs), offset=0)
    write(apart, recs, per_batch=1, offset=0)
    assert dump(together) == dump(apart)


def test_new_events_with_their_results_are_inserted_and_never_updated(two_dbs: tuple[str, str]) -> None:
    """The merged insert really runs: no events row is written twice (it used to fail on the
    value tuples, and the batch fell back to isolating records one by one, same rows)."""
    together, _ = two_dbs
    with psycopg.connect(together) as conn:
        conn.execute("SELECT 1")  # a transaction open before write_batch, so it nests and rolls back
        written = write_batch(conn, one_batch(pairs("newcomer", 20), offset=1000), {})
        assert not written.rejects and written.merged == 20
        sql = "SELECT n_tup_ins, n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'events'"
        assert conn.execute(sql).fetchone() == (20, 0)  # the transaction is still open
        # every id was new: one COPY straight into events, the merged stage never made
        assert not _has_merged_stage(conn)
        conn.rollback()


def _has_merged_stage(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('pg_temp._stage_events_merged')").fetchone()[0] is not None


def test_an_existing_id_sends_the_pairs_through_the_stage(database_url: str) -> None:
    """One id of the batch is in events already: the straight COPY fails on it and is rolled
    back, and the stage's merged insert still inserts the new ids in one row each."""
    with scratch_database(database_url, "sink") as together, scratch_database(database_url, "sink") as apart:
        _existing_id_through_the_stage(together, apart)


def _existing_id_through_the_stage(together: str, apart: str) -> None:
    recs = pairs("mixed", 5)
    for url in (together, apart):
        write(url, recs[:2], per_batch=2, offset=5000)  # the first pair, alone
    with psycopg.connect(together) as conn:
        written = write_batch(conn, one_batch(recs, offset=6000), {})
        assert not written.rejects and written.merged == 4
        assert _has_merged_stage(conn)
        conn.commit()
    write(apart, recs, per_batch=1, offset=7000)
    assert dump(together) == dump(apart)


def test_a_value_postgres_refuses_in_a_merged_pair_quarantines_that_record_alone(database_url: str) -> None:
    """The straight COPY of the merged rows fails on a result's NUL (a data error, not an id
    that exists): the batch is isolated, that result alone is quarantined and every other row,
    its event's included, is written as one record per batch writes it."""
    codec = default_codec()
    recs = pairs("nul-pair", 4)
    bad = codec.decode(codec.encode(schema_for(t.LOYALTY_RESULTS), {**recs[3][1], "reason": "a\x00b"}),
                       schema_for(t.LOYALTY_RESULTS))  # fmt: skip
    recs[3] = (t.LOYALTY_RESULTS, bad)  # the second pair's result
    with scratch_database(database_url, "sink") as together, scratch_database(database_url, "sink") as apart:
        with psycopg.connect(together) as conn:
            written = write_batch(conn, one_batch(recs, offset=0), {})
            assert [(r.table, r.offset) for r in written.rejects] == [("events", 3)]
            conn.commit()
        with psycopg.connect(apart) as conn:
            for offset, (topic, value) in enumerate(recs):
                rejects = write_batch(conn, one_batch([(topic, value)], offset=offset), {}).rejects
                assert [r.table for r in rejects] == (["events"] if offset == 3 else [])
                conn.commit()
                conn.execute("DELETE FROM sink_offsets")
                conn.commit()
        assert dump(together) == dump(apart)
        assert query(together, "SELECT count(*) FROM events WHERE customer_id = 'nul-pair'") == [(4,)]
