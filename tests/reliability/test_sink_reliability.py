"""The sink under failure: kill -9 mid-stream, PostgreSQL down mid-stream -> exact totals."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from deploy.local.paths import free_port
from deploy.local.postgres import Cluster
from processors.runtime.testing import wait_for
from schemas.settings import Settings, libpq_url
from sinks import samples
from sinks.migrate import upgrade
from sinks.sink import Sink, SinkOptions

pytestmark = pytest.mark.reliability

CUSTOMERS, PER_CUSTOMER = 30, 100  # 6,000 records; points 1..100 per customer
EXPECTED_POINTS = CUSTOMERS * PER_CUSTOMER * (PER_CUSTOMER + 1) / 2


def committed(url: str) -> int:
    """Records committed to PostgreSQL (every partition starts at offset 0); -1 if down."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            sql = "SELECT coalesce(sum(next_offset), 0) FROM sink_offsets"
            return conn.execute(sql).fetchone()[0]
    except psycopg.OperationalError:
        return -1


def assert_exact(url: str) -> None:
    with psycopg.connect(url) as conn:

        def one(sql: str) -> Any:
            return conn.execute(sql).fetchone()

        n = CUSTOMERS * PER_CUSTOMER
        assert one("SELECT count(*), sum(points) FROM events") == (n, EXPECTED_POINTS)
        assert one("SELECT count(*) FROM events WHERE status <> 'RESOLVED'") == (0,)
        credited = "SELECT count(*), sum(amount) FROM ledger_lines WHERE kind = 'ACCUMULATION'"
        assert one(credited) == (n, EXPECTED_POINTS)
        assert one("SELECT count(*), sum(points) FROM wallets") == (CUSTOMERS, EXPECTED_POINTS)


def produce_slowly(settings: Settings, chunks: int = 60) -> threading.Thread:
    """Produce the stream in chunks, as traffic would arrive, on a background thread."""
    records = samples.stream(CUSTOMERS, PER_CUSTOMER)
    size = len(records) // chunks + 1

    def run() -> None:
        out = samples.producer(settings)
        for i in range(0, len(records), size):
            samples.produce(settings, records[i : i + size], out)
            time.sleep(0.05)  # pacing the producer, not waiting for a condition

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def fresh_db(server_url: str) -> str:
    name = f"sinkrel_{uuid.uuid4().hex[:10]}"
    base = libpq_url(server_url)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = base.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    return url


def drop_db(server_url: str, url: str) -> None:
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {url.rsplit('/', 1)[1]} WITH (FORCE)")


@pytest.fixture
def db(database_url: str) -> Iterator[str]:
    url = fresh_db(database_url)
    yield url
    drop_db(database_url, url)


def start_sink(settings: Settings, url: str, port: int) -> subprocess.Popen:
    env = dict(
        os.environ,
        DATABASE_URL=url,
        TOPIC_PREFIX=settings.topic_prefix,
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
    )
    cmd = [sys.executable, "-m", "sinks.service", "--metrics-port", str(port),
           "--instance-id", "sink-0", "--batch-size", "300", "--linger-ms", "20"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)


def test_kill_9_mid_stream_then_restart_is_exact(settings: Settings, db: str) -> None:
    producer = produce_slowly(settings)
    total = CUSTOMERS * PER_CUSTOMER * 2
    port = free_port()
    for fraction in (0.25, 0.6):
        proc = start_sink(settings, db, port)
        try:
            wait_for(lambda f=fraction: committed(db) >= total * f, timeout=60, what=f"{fraction} committed")
        finally:
            proc.kill()
            proc.wait()
        at_kill = committed(db)
        assert at_kill < total, "killed too late to test anything"
        print(f"killed at {at_kill}/{total}")
    proc = start_sink(settings, db, port)
    try:
        producer.join(60)
        wait_for(lambda: committed(db) == total, timeout=60, what="all committed")
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["db"] == "up"
        # (not rows written: a COMMIT sent just before the kill may still land, leaving this
        # last sink nothing to write; its lag shows once a fetch told it the partitions' ends)
        def lag_reported() -> str | None:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            return text if 'consumer_lag{consumer="sink"' in text else None

        metrics = wait_for(lag_reported, timeout=30, what="the sink's lag reported")
        assert "sink_db_up 1.0" in metrics
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    assert_exact(db)


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster we may stop and start at will."""
    with tempfile.TemporaryDirectory(prefix="sinkpg-") as home:
        os.chmod(home, 0o755)
        cluster = Cluster(Path(home) / "pg")
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()


def test_postgres_outage_mid_stream_backs_off_and_resumes_exactly(
    settings: Settings, own_cluster: Cluster
) -> None:
    url = fresh_db(own_cluster.url)
    cfg = dataclasses.replace(settings, database_url=url)
    total = CUSTOMERS * PER_CUSTOMER * 2
    sink = Sink(cfg, SinkOptions(batch_size=300, linger_ms=20, backoff_max_s=0.5)).start()
    try:
        producer = produce_slowly(settings)
        wait_for(lambda: committed(url) >= total * 0.3, timeout=60, what="30% committed")
        own_cluster.stop()
        assert sink.committed_records < total, "stopped too late to test anything"
        print(f"stopped postgres at {sink.committed_records}/{total}")
        wait_for(lambda: not sink.db_ok, timeout=60, what="sink noticed the outage")
        producer.join(60)
        own_cluster.start()
        wait_for(lambda: committed(url) == total, timeout=60, what="all committed after restart")
        assert sink.health()["status"] == "ok"
    finally:
        sink.stop()
    assert_exact(url)


def test_sink_started_while_postgres_is_down_waits_then_catches_up(
    settings: Settings, own_cluster: Cluster
) -> None:
    url = fresh_db(own_cluster.url)
    cfg = dataclasses.replace(settings, database_url=url)
    own_cluster.stop()
    sink = Sink(cfg, SinkOptions(batch_size=300, linger_ms=20, backoff_max_s=0.5)).start()
    try:
        produce_slowly(settings).join(60)
        wait_for(lambda: sink.health()["assigned"] > 0, timeout=60, what="partitions assigned")
        assert sink.health()["db"] == "down" and sink.committed_records == 0
        own_cluster.start()
        wait_for(lambda: committed(url) == CUSTOMERS * PER_CUSTOMER * 2, timeout=60, what="all committed")
    finally:
        sink.stop()
    assert_exact(url)
