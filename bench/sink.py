"""Sink throughput: rows/s the exactly-once sink writes into PostgreSQL, next to a plain COPY.

Produces `--customers x --events` loyalty events and their results (each result: the event's
status, one ledger line, the wallet), runs the sink from offset 0 until every offset is
committed, then COPYs the very same rows into bare copies of the tables in one transaction
as the ceiling. Target: >= 20,000 rows/s.

    KAFKA_BOOTSTRAP_SERVERS=... DATABASE_URL=postgresql://... python -m bench.sink
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import uuid

import psycopg
from prometheus_client import REGISTRY

from deploy.topics import ensure_topics
from schemas.settings import Settings, libpq_url
from sinks import samples
from sinks.batch import Batch
from sinks.mapping import Source
from sinks.migrate import upgrade
from sinks.sink import Sink, SinkOptions
from sinks.tables import TARGETS


def fresh_database(server_url: str) -> str:
    name = f"sinkbench_{uuid.uuid4().hex[:8]}"
    base = libpq_url(server_url)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + "/" + name


def drop_database(server_url: str, url: str) -> None:
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {url.rsplit('/', 1)[1]} WITH (FORCE)")


def rows_written() -> float:
    return sum(
        s.value
        for metric in REGISTRY.collect()
        if metric.name == "sink_rows_written"
        for s in metric.samples
        if s.name == "sink_rows_written_total"
    )


def committed(conn: psycopg.Connection) -> int:
    sql = "SELECT coalesce(sum(next_offset), 0) FROM sink_offsets"
    return int(conn.execute(sql).fetchone()[0])


def run_sink(settings: Settings, total: int, batch_size: int, linger_ms: int) -> tuple:
    """Seconds from the first committed batch until all `total` records are in; rows written."""
    sink = Sink(settings, SinkOptions(batch_size=batch_size, linger_ms=linger_ms)).start()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        try:
            while (first := committed(conn)) == 0:
                time.sleep(0.01)
            start_rows, began = rows_written(), time.perf_counter()
            while committed(conn) < total:
                time.sleep(0.02)
            seconds = time.perf_counter() - began
        finally:
            sink.stop()
    return seconds, rows_written() - start_rows, total - first


def plain_copy(url: str, records: list[tuple[str, str, dict]]) -> tuple[float, int]:
    """COPY the same (reduced) rows into bare tables: the ceiling for any sink."""
    batch = Batch()
    for i, (topic, _key, value) in enumerate(records):
        batch.add(value, Source(topic, 0, i), topic)
    with psycopg.connect(url) as conn:
        began = time.perf_counter()
        n = 0
        for name, rows in batch.rows.items():
            target = TARGETS[name]
            cols = target.columns
            select = f"SELECT {', '.join(cols)} FROM {target.table} WITH NO DATA"
            conn.execute(f"CREATE TABLE bare_{name} AS {select}")
            with conn.cursor().copy(f"COPY bare_{name} ({', '.join(cols)}) FROM STDIN") as copy:
                for row in rows.values():
                    copy.write_row(tuple(row.get(c) for c in cols))
                    n += 1
        conn.commit()
        return time.perf_counter() - began, n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--events", type=int, default=25, help="events per customer")
    p.add_argument("--batch-size", type=int, default=5000)
    p.add_argument("--linger-ms", type=int, default=200)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    env = Settings.from_env()
    settings = dataclasses.replace(env, topic_prefix=f"bench{uuid.uuid4().hex[:6]}.")
    ensure_topics(settings)
    url = fresh_database(env.database_url)
    settings = dataclasses.replace(settings, database_url=url)
    try:
        upgrade(url)
        records = samples.stream(args.customers, args.events)
        t0 = time.perf_counter()
        samples.produce(settings, records)
        print(f"produced {len(records):,} records in {time.perf_counter() - t0:.1f}s")
        seconds, rows, recs = run_sink(settings, len(records), args.batch_size, args.linger_ms)
        print(
            f"sink:       {rows:,.0f} rows ({recs:,} records) in {seconds:.2f}s = "
            f"{rows / seconds:,.0f} rows/s, {recs / seconds:,.0f} records/s"
        )
        copy_s, copy_rows = plain_copy(url, records)
        print(f"plain COPY: {copy_rows:,} rows in {copy_s:.2f}s = {copy_rows / copy_s:,.0f} rows/s")
        print(f"sink / COPY = {(rows / seconds) / (copy_rows / copy_s):.0%}")
    finally:
        drop_database(env.database_url, url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
