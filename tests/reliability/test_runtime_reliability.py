"""The runtime's exactly-once promise under process faults, on the real broker.

Every test asserts exact numbers: per key, the counter processor's committed outputs are
exactly 1..n (n = records sent for that key): nothing lost, nothing applied twice.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from plumbing.kafka_util import committed_reader
from plumbing.topic_admin import ensure_topics
from processors.runtime.changelog import changelog_topic, ensure_changelogs
from processors.runtime.dead_letters import dlq_topic
from processors.runtime.example import TOPICS
from processors.runtime.task import TIMERS_STORE
from processors.runtime.testing import wait_for
from schemas.topics import topic_name
from tests.reliability.harness import Load, Outputs, ProcessorProcess, assert_exactly_once

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


@pytest.fixture
def counter(settings, tmp_path: Path):
    ensure_topics(settings, TOPICS)
    outputs = Outputs(settings)
    yield settings, tmp_path, outputs
    outputs.close()


def test_kill_minus_9_repeatedly_under_load_loses_and_doubles_nothing(counter):
    settings, tmp, outputs = counter
    load = Load(settings, total=20_000, keys=50, rate=1_500)
    proc = ProcessorProcess(settings, tmp / "state", "a", tmp).start()
    load.start()
    rng = random.Random(7)
    for _ in range(5):
        outputs.poll(rng.uniform(1.0, 2.5))  # let it work a while, at a random moment...
        proc.kill()  # ...SIGKILL, mid-transaction or not
        proc.start()
    load.join()
    outputs.wait_for(load.sent, timeout=120)
    assert sum(load.sent.values()) == 20_000
    assert_exactly_once(outputs, load.sent)
    assert proc.terminate() == 0


def test_dead_letters_under_kill_minus_9_are_neither_lost_nor_doubled(counter):
    """Poison records among the load: each lands in counter.dlq exactly once, however often
    the processor is killed, because the dead letter commits with the offset that passes it."""
    settings, tmp, outputs = counter
    load = Load(settings, total=8_000, keys=30, rate=1_500, poison_every=97)
    proc = ProcessorProcess(settings, tmp / "state", "a", tmp).start()
    load.start()
    rng = random.Random(11)
    for _ in range(3):
        outputs.poll(rng.uniform(1.0, 2.5))
        proc.kill()
        proc.start()
    load.join()
    outputs.wait_for(load.sent, timeout=120)
    assert_exactly_once(outputs, load.sent)
    letters = wait_for(lambda: (got := dead_letters(settings)) and len(got) >= load.poisoned and got,
                       timeout=60, what="every poison record dead-lettered")  # fmt: skip
    assert sorted(letters) == sorted(f"poison {i}".encode() for i in range(96, 8_000, 97))
    assert proc.terminate() == 0


def dead_letters(settings) -> list[bytes]:
    """Every committed dead letter of the counter processor, read until the topic is quiet."""
    consumer = committed_reader(settings, dlq_topic("counter"))
    got: list[bytes] = []
    try:
        while batch := consumer.consume(500, 1.0):
            got += [m.value() for m in batch if not m.error()]
    finally:
        consumer.close()
    return got


def test_second_instance_joins_and_leaves_mid_stream(counter):
    settings, tmp, outputs = counter
    load = Load(settings, total=12_000, keys=40, rate=1_500)
    first = ProcessorProcess(settings, tmp / "state-a", "a", tmp).start()
    load.start()
    outputs.poll(2.0)
    second = ProcessorProcess(settings, tmp / "state-b", "b", tmp).start()
    wait_for(lambda: "partitions assigned" in second.log(), 60, "the second instance's assignment")
    outputs.poll(2.0)
    assert second.terminate() == 0  # graceful leave: its partitions move back to the first
    load.join()
    outputs.wait_for(load.sent, timeout=120)
    assert_exactly_once(outputs, load.sent)
    assert "store restored" in second.log() or "store restored" in first.log()
    assert first.terminate() == 0


def test_state_dir_deleted_between_runs_is_rebuilt_from_changelog(counter):
    settings, tmp, outputs = counter
    state = tmp / "state"
    first = Load(settings, total=3_000, keys=30, rate=5_000)
    proc = ProcessorProcess(settings, state, "a", tmp).start()
    first.start()
    first.join()
    outputs.wait_for(first.sent, timeout=60)
    assert proc.terminate() == 0
    shutil.rmtree(state)
    second = Load(settings, total=3_000, keys=30, rate=5_000)
    proc.start()
    second.start()
    second.join()
    sent = {k: first.sent[k] + second.sent[k] for k in first.sent}
    outputs.wait_for(sent, timeout=60)
    assert_exactly_once(outputs, sent)
    assert "store restored" in proc.log()
    assert proc.terminate() == 0


def test_timers_scheduled_before_a_kill_fire_after_restart_once(counter):
    settings, tmp, outputs = counter
    load = Load(settings, total=20, keys=20, rate=1_000, extra={"remind_in_ms": 4_000})
    proc = ProcessorProcess(settings, tmp / "state", "a", tmp).start()
    load.start()
    load.join()
    outputs.wait_for(load.sent, timeout=60)  # timers are committed with these outputs
    proc.kill()
    assert not outputs.reminders
    proc.start()
    wait_for(lambda: outputs.poll(0.3) or len(outputs.reminders) == 20, 60, "20 reminders")
    outputs.poll(2.0)  # and no second firing afterwards
    assert dict(outputs.reminders) == {f"key-{i}": 1 for i in range(20)}
    assert proc.terminate() == 0


def test_a_kill_after_a_large_restore_rereads_only_what_came_after_the_last_commit(counter):
    """The restored stores are flushed before any record is processed, and every commit after
    that is in RocksDB's WAL: a SIGKILL restart reads the changelog's tail, not the whole state
    again (it used to: what a restore wrote stayed in the memtable, which a kill lost)."""
    settings, tmp, outputs = counter
    group = topic_name("counter", settings)
    ensure_changelogs(settings, group, ["totals", TIMERS_STORE])
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "transactional.id": f"{group}-fill"})  # fmt: skip
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(20_000):
        value = orjson.dumps({"count": i, "sum": 2 * i})
        producer.produce(changelog_topic(group, "totals"), value, f"k{i}".encode(),
                         partition=i % settings.partitions)  # fmt: skip
    producer.commit_transaction(60)
    proc = ProcessorProcess(settings, tmp / "state", "a", tmp).start()
    wait_for(lambda: "partitions ready" in proc.log(), 120, "the cold restore")
    first = Load(settings, total=2_000, keys=20, rate=2_000)
    first.start()
    first.join()
    outputs.wait_for(first.sent, timeout=60)
    proc.kill()
    proc.start()
    wait_for(lambda: proc.log().count('"partitions ready"') == 2, 120, "the restart")
    cold, restart = _restored_records(proc.log())
    assert cold == 20_000
    assert restart <= 50, restart  # one transaction's dirty keys at most (20 totals + no timers)
    second = Load(settings, total=2_000, keys=20, rate=2_000)
    second.start()
    second.join()
    sent = {k: first.sent[k] + second.sent[k] for k in first.sent}
    outputs.wait_for(sent, timeout=60)
    assert_exactly_once(outputs, sent)
    assert proc.terminate() == 0


def _restored_records(log: str) -> list[int]:
    """Changelog records restored by each run in the log (one entry per 'processor started')."""
    runs: list[int] = []
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        entry = orjson.loads(line)
        if entry.get("msg") == "processor started":
            runs.append(0)
        elif entry.get("msg") == "store restored":
            runs[-1] += entry["records"]
    return runs
