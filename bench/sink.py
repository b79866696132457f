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
import os
import sys
import time
import uuid

import psycopg
from prometheus_client import REGISTRY

from bench._common import fresh_database
from plumbing.topic_admin import ensure_topics
from schemas.settings import Settings, libpq_url
from sinks import samples
from sinks.align import AlignOptions
from sinks.batch import Batch
from sinks.mapping import Source
from sinks.migrate import upgrade
from sinks.sink import Sink, SinkOptions
from sinks.tables import TARGETS


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


def server_cpu(conn: psycopg.Connection) -> float | None:
    """CPU seconds so far of the PostgreSQL backends on this database (None unless PostgreSQL
    runs on this machine and /proc shows them): the load-independent half of the cost."""
    pids = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()").fetchall()
    total = 0.0
    try:
        for (pid,) in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None
    return total


@dataclasses.dataclass
class Cost:
    """What a measured stretch took: wall seconds, this process's CPU, the backends' CPU."""

    seconds: float
    cpu: float
    server_cpu: float | None

    def per(self, n: float) -> str:
        server = "n/a" if self.server_cpu is None else f"{self.server_cpu / n * 1e6:.1f}"
        return f"client CPU {self.cpu / n * 1e6:.1f} us, PostgreSQL CPU {server} us"


def run_sink(settings: Settings, total: int, batch_size: int, linger_ms: int, align: bool = True) -> tuple:
    """Cost from the first committed batch until all `total` records are in; rows written,
    records, and events rows inserted with their result (the merged insert)."""
    options = SinkOptions(batch_size=batch_size, linger_ms=linger_ms, align=AlignOptions(enabled=align))
    sink = Sink(settings, options).start()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        try:
            while (first := committed(conn)) == 0:
                time.sleep(0.01)
            start_rows, began, cpu, server = (
                rows_written(),
                time.perf_counter(),
                time.process_time(),
                server_cpu(conn),
            )
            while committed(conn) < total:
                time.sleep(0.02)
            server_end = server_cpu(conn)
            cost = Cost(
                time.perf_counter() - began,
                time.process_time() - cpu,
                None if server is None or server_end is None else server_end - server,
            )
        finally:
            sink.stop()
    if (released := sink.released_by_time) is not None:
        print(f"aligner: {released:,} records released by time, not by their partner")
    return cost, rows_written() - start_rows, total - first, sink.merged_events


def plain_copy(url: str, records: list[tuple[str, str, dict]]) -> tuple[Cost, int]:
    """COPY the same (reduced) rows into bare tables: the ceiling for any sink."""
    batch = Batch()
    for i, (topic, _key, value) in enumerate(records):
        batch.add(value, Source(topic, 0, i), topic)
    with psycopg.connect(url) as conn:
        began, cpu, server = time.perf_counter(), time.process_time(), server_cpu(conn)
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
        server_end = server_cpu(conn)
        spent = None if server is None or server_end is None else server_end - server
        return Cost(time.perf_counter() - began, time.process_time() - cpu, spent), n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--events", type=int, default=25, help="events per customer")
    p.add_argument("--batch-size", type=int, default=5000)
    p.add_argument("--linger-ms", type=int, default=200)
    p.add_argument("--no-align", action="store_true", help="read events and results unaligned")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    env = Settings.from_env()
    settings = dataclasses.replace(env, topic_prefix=f"bench{uuid.uuid4().hex[:6]}.")
    ensure_topics(settings)
    url = fresh_database(env.database_url, "sinkbench")
    settings = dataclasses.replace(settings, database_url=url)
    try:
        upgrade(url)
        records = samples.stream(args.customers, args.events)
        t0 = time.perf_counter()
        samples.produce(settings, records)
        print(f"produced {len(records):,} records in {time.perf_counter() - t0:.1f}s")
        sink, rows, recs, merged = run_sink(
            settings, len(records), args.batch_size, args.linger_ms, align=not args.no_align
        )
        print(
            f"sink:       {rows:,.0f} rows ({recs:,} records) in {sink.seconds:.2f}s = "
            f"{rows / sink.seconds:,.0f} rows/s, {recs / sink.seconds:,.0f} records/s; "
            f"per row: {sink.per(rows)}; {merged:,} events merged with their result"
        )
        copy, copy_rows = plain_copy(url, records)
        print(
            f"plain COPY: {copy_rows:,} rows in {copy.seconds:.2f}s = "
            f"{copy_rows / copy.seconds:,.0f} rows/s; "
            f"per row: {copy.per(copy_rows)}"
        )
        print(f"sink / COPY = {(rows / sink.seconds) / (copy_rows / copy.seconds):.0%}")
        if sink.server_cpu is not None and copy.server_cpu is not None:
            cost = (sink.cpu + sink.server_cpu) / rows
            print(f"CPU per row, COPY / sink = {(copy.cpu + copy.server_cpu) / copy_rows / cost:.0%}")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    finally:
        drop_database(env.database_url, url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
