"""A batch's COPY data can be made before the write (sinks/writer.py prepare, in the sink's
reader thread): the tables are the ones the writer alone writes, for batches of one topic,
of both (where the merged events insert decides and prepare leaves events to the writer),
and for a batch whose rows PostgreSQL refuses in part (isolated and quarantined)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from schemas import topics as t
from sinks import samples, writer
from sinks.batch import Batch
from sinks.mapping import Source
from tests.integration.test_sink_merged_events import dump, records
from tests.support.pg import query, scratch_database

pytestmark = pytest.mark.integration


@pytest.fixture
def dbs(database_url: str) -> Iterator[list[str]]:
    with scratch_database(database_url, "sink") as one, scratch_database(database_url, "sink") as two:
        yield [one, two]


def _batches(recs: list[tuple[str, dict]]) -> list[list[tuple[str, dict]]]:
    """Results of the first half, then events of all, then results of the rest, then both."""
    events = [r for r in recs if r[0] == t.EVENTS_LOYALTY]
    results = [r for r in recs if r[0] == t.LOYALTY_RESULTS]
    half = len(results) // 2
    return [results[:half], events, results[half:], recs]


def _write(url: str, recs: list[tuple[str, dict]], prepared: bool) -> list[set[str]]:
    made = []
    with psycopg.connect(url) as conn:
        offset = 0
        nul = samples.event("nul", 0, reference="a\x00b")  # text PostgreSQL refuses
        for i, part in enumerate(_batches(recs)):
            batch = Batch()
            for topic, value in part + ([(t.EVENTS_LOYALTY, nul)] if i == 3 else []):
                batch.add(value, Source(topic, 0, offset), topic)
                offset += 1
            if prepared:
                writer.prepare(conn, batch)
                made.append(set(batch.encoded))
            written = writer.write_batch(conn, batch, {})
            assert [r.table for r in written.rejects] == (["events"] if i == 3 else [])
            conn.commit()
            conn.execute("DELETE FROM sink_offsets")
            conn.commit()
    return made


def test_prepared_batches_write_the_tables_the_writer_alone_writes(dbs: list[str]) -> None:
    prepared, alone = dbs
    recs = records()
    made = _write(prepared, recs, prepared=True)
    _write(alone, recs, prepared=False)
    assert dump(prepared) == dump(alone)
    assert query(prepared, "SELECT count(*) FROM events")[0][0] > 5
    assert "events_from_result" in made[0] and "events_from_event" in made[1]
    assert "events_from_event" not in made[3] and "ledger_lines" in made[3]
