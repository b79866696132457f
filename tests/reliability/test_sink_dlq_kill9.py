"""The sink's dead letters through kill -9: poison records interleaved with a stream, the sink
process killed twice while its relay publishes, restarted: every reject is in sink.dlq once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka import Producer

from deploy import dlq
from deploy.local.paths import free_port
from processors.runtime.testing import wait_for
from schemas import topics as t
from schemas.settings import Settings
from schemas.topics import topic_name
from sinks import samples
from sinks.dlq_relay import last_published
from tests.reliability.test_sink_reliability import committed, drop_db, fresh_db, start_sink

pytestmark = pytest.mark.reliability

CUSTOMERS, PER_CUSTOMER, POISON_EVERY = 20, 60, 4  # 2,400 good records, 600 poison


@pytest.fixture
def db(database_url: str) -> Iterator[str]:
    url = fresh_db(database_url)
    yield url
    drop_db(database_url, url)


def produce_with_poison(settings: Settings) -> tuple[threading.Thread, int]:
    """Good records with a garbage record after every few, in chunks on a background thread."""
    records = samples.stream(CUSTOMERS, PER_CUSTOMER)
    poison = [(f"poison-{i}".encode(), f"garbage {i} \xff".encode("latin-1"))
              for i in range(0, len(records), POISON_EVERY)]  # fmt: skip

    def run() -> None:
        good = samples.producer(settings)
        raw = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": True})
        for n, (key, value) in enumerate(poison):
            samples.produce(settings, records[n * POISON_EVERY : (n + 1) * POISON_EVERY], good)
            raw.produce(topic_name(t.EVENTS_LOYALTY, settings), key=key, value=value)
            if n % 10 == 0:
                assert raw.flush(30) == 0
                time.sleep(0.2)  # pacing the producer (traffic over seconds), not waiting for a condition
        assert raw.flush(30) == 0

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, len(records) + len(poison)


def published(settings: Settings) -> int:
    try:
        return last_published(settings, topic_name("sink.dlq", settings), timeout=10)
    except Exception:  # noqa: BLE001 - the relay has not created the topic yet
        return 0


def test_kill_9_while_the_relay_publishes_then_restart_publishes_each_letter_once(
    settings: Settings, db: str
) -> None:
    producer, total = produce_with_poison(settings)
    poison = total - CUSTOMERS * PER_CUSTOMER * 2
    port = free_port()
    for fraction in (0.2, 0.55):
        proc = start_sink(settings, db, port)
        try:
            at_least = poison * fraction
            wait_for(lambda n=at_least: published(settings) >= n, timeout=90, what=f"{at_least} published")
        finally:
            proc.kill()
            proc.wait()
        # (not asserted below `poison`: on a slow machine the relay may finish first; the
        # kill between produce and commit is pinned down by tests/integration/test_sink_dlq.py)
        print(f"killed with reject id {published(settings)} of {poison} published")
    proc = start_sink(settings, db, port)
    try:
        producer.join(90)
        wait_for(lambda: committed(db) == total, timeout=90, what="all committed")
        with psycopg.connect(db) as conn:
            ids = [i for (i,) in conn.execute("SELECT id FROM sink_rejects ORDER BY id").fetchall()]
        assert len(ids) == poison
        wait_for(lambda: published(settings) == ids[-1], timeout=90, what="every reject published")
    finally:
        proc.kill()
        proc.wait()
    letters = list(dlq.read_dead_letters(settings, "sink"))
    assert sorted(int(d.headers["dlq.reject_id"]) for d in letters) == ids  # each once
    assert sorted(d.key for d in letters) == sorted(f"poison-{i}".encode() for i in range(0, poison * 4, 4))
    assert {d.headers["dlq.reason"] for d in letters} == {"undecodable"}
