"""Restore runs in the processing loop: /readyz is 503 while a large state restores, /healthz
stays 200, and no record of a partition is processed before its stores are whole."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from plumbing.kafka_util import committed_reader
from plumbing.topic_admin import ensure_topics
from processors.runtime import runner as runner_module
from processors.runtime.api import Record
from processors.runtime.changelog import Restorer, changelog_topic, ensure_changelogs
from processors.runtime.example import INPUT, OUTPUT, TOPICS, CounterProcessor
from processors.runtime.partitioner import partition_for
from processors.runtime.runner import Runner, RuntimeOptions
from processors.runtime.store import MemoryBackend
from processors.runtime.task import TIMERS_STORE, PartitionTask
from processors.runtime.testing import wait_for
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import topic_name

pytestmark = pytest.mark.integration

KEYS = 40_000


def fill_changelog(settings: Settings, keys: int, by_key: bool = False) -> None:
    """`keys` totals in the counter's changelog (key k<i> has count i), in transactions, so
    every batch ends with a commit marker."""
    group = topic_name("counter", settings)
    ensure_changelogs(settings, group, ["totals", TIMERS_STORE])
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "transactional.id": f"{group}-fill"}
    )
    producer.init_transactions(30)
    for start in range(0, keys, 5_000):
        producer.begin_transaction()
        for i in range(start, min(keys, start + 5_000)):
            value = orjson.dumps({"count": i, "sum": 2 * i})
            key = f"k{i}".encode()  # by murmur2, as the runner routes keys; else partition i % 3
            partition = partition_for(key, 3) if by_key else i % 3
            producer.produce(changelog_topic(group, "totals"), value, key, partition=partition)
        producer.commit_transaction(30)


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


class Probe(threading.Thread):
    """Polls /healthz and /readyz until stopped, keeping every answer in order."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.health: list[int] = []
        self.ready: list[tuple[int, str]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            self.health.append(get(self.port, "/healthz")[0])
            code, body = get(self.port, "/readyz")
            self.ready.append((code, body["status"]))


class HeldRestorer(Restorer):
    """Reports no partition as restored until `release` is set, so the test sees the
    restoring phase however fast the broker is (the loop keeps turning meanwhile)."""

    release = threading.Event()
    steps = 0

    def step(self, budget: float = 0.2) -> list[int]:
        done = super().step(budget)
        HeldRestorer.steps += 1
        return done if HeldRestorer.release.is_set() else []


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "restore-workers"])
def test_readyz_is_503_while_a_large_state_restores_and_healthz_stays_200(settings, tmp_path, monkeypatch,
                                                                          workers):  # fmt: skip
    ensure_topics(settings, TOPICS)
    fill_changelog(settings, KEYS, by_key=True)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "partitioner": "murmur2_random"})  # fmt: skip
    for i in (7, 100, 39_999):  # key k<i>'s restored count is i
        producer.produce(topic_name(INPUT, settings), orjson.dumps({"amount": 1}), f"k{i}".encode())
    producer.flush(30)
    monkeypatch.setattr(runner_module, "Restorer", HeldRestorer)
    HeldRestorer.release.clear()
    HeldRestorer.steps = 0
    restored_before = _restored()

    options = RuntimeOptions(state_dir=tmp_path, instance_id="r", metrics_port=0, restore_workers=workers,
                             restore_parallel_min_records=0)  # fmt: skip
    runner = Runner(CounterProcessor(), settings, options)
    runner.start()
    port = wait_for(lambda: runner.health and runner.health.port, what="the health server")
    probe = Probe(port)
    probe.start()
    try:
        wait_for(lambda: (503, "restoring") in probe.ready, what="/readyz saying restoring")
        wait_for(lambda: HeldRestorer.steps > 3, what="the loop turning while restoring")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'stream_restoring_partitions{processor="counter"} 3.0' in metrics
        assert "stream_restore_remaining_records{" in metrics
        reader = committed_reader(settings, OUTPUT)
        assert not [m for m in reader.consume(100, 1.0) if not m.error()]  # held: nothing processed
        HeldRestorer.release.set()
        wait_for(lambda: probe.ready and probe.ready[-1] == (200, "ok"), what="/readyz 200")
        outputs = {}
        wait_for(lambda: _read(reader, outputs) >= 3, what="the three outputs")
        reader.close()
    finally:
        probe.done.set()
        probe.join(5)
        runner.stop()
    assert runner.error is None
    assert set(probe.health) == {200}, probe.health  # liveness never failed mid-restore
    codes = [code for code, _ in probe.ready]
    first_ok = codes.index(200)
    assert set(codes[:first_ok]) == {503} and set(codes[first_ok:]) == {200}
    assert _restored() - restored_before == KEYS  # every changelog record applied, once
    # every record saw its key's restored state: restored count + 1
    assert outputs == {"k7": (8, 15), "k100": (101, 201), "k39999": (40000, 79999)}


def _restored() -> float:
    labels = {"processor": "counter", "store": "totals"}
    sample = REGISTRY.get_sample_value("stream_restore_records_total", labels)
    return sample or 0.0


def _read(reader, outputs: dict) -> int:
    for msg in reader.consume(100, 0.2):
        if not msg.error():
            value = orjson.loads(msg.value())
            outputs[value["key"]] = (value["count"], value["sum"])
    return len(outputs)


def test_empty_changelog_and_checkpoint_at_the_end_are_done_by_position(settings, tmp_path):
    group = topic_name("counter", settings)
    fill_changelog(settings, 30)
    path = tmp_path / "totals"
    restorer = Restorer(settings.kafka_bootstrap_servers, group, "counter")
    try:
        restorer.add({0: {"totals": path / "0"}, 1: {TIMERS_STORE: tmp_path / "timers" / "1"}})
        assert restorer.remaining() == 10 + 1  # partition 0's records and commit marker; empty: 0
        wait_for(lambda: restorer.step(0.05) == [0, 1], what="partition 0 restored")
        assert restorer.remaining() == 0
        totals = restorer.take(0)["totals"]
        assert dict(totals.items(b"", None)) == {f"k{i}".encode(): orjson.dumps({"count": i, "sum": 2 * i})
                                                 for i in range(0, 30, 3)}  # fmt: skip
        checkpoint = totals.checkpoint()
        totals.close()
        # reopened with its checkpoint at the last record: only the commit marker is left
        restorer.add({0: {"totals": Path(path / "0")}})
        assert restorer.remaining() == 1  # the commit marker only, never delivered
        wait_for(lambda: 0 in restorer.step(0.05), what="partition 0 restored again")
        again = restorer.take(0)["totals"]
        assert again.checkpoint() == checkpoint
        again.close()
    finally:
        restorer.close()


class Reminders(CounterProcessor):
    """The counter's timers, replaced and cancelled by id as each record says."""

    def process(self, ctx, record) -> None:  # noqa: ANN001 (the Processor's signature)
        if record.value.get("cancel"):
            ctx.cancel(record.key)
        else:
            ctx.schedule(record.value["at"], record.key, {}, record.key)


def test_timers_restore_from_one_record_each_and_are_found_by_id_again(settings, tmp_path):
    """A timer's changelog holds one record per timer; the restored store finds each timer by
    its id again (replaced and cancelled ones included), as the store that wrote them did."""
    group = topic_name("counter", settings)
    ensure_changelogs(settings, group, ["totals", TIMERS_STORE])
    written = PartitionTask(Reminders(), 0, {TIMERS_STORE: MemoryBackend()}, lambda *a: None, lambda: 0,
                            Program)  # fmt: skip
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "transactional.id": f"{group}-timers"})  # fmt: skip
    producer.init_transactions(30)
    sent = 0
    for batch in ([("a", 100), ("b", 200), ("c", 300)], [("a", 150), ("b", None)], [("c", 100), ("d", 400)]):
        for key, at in batch:
            value = {"cancel": True} if at is None else {"at": at}
            written.process(Record(INPUT, 0, 0, key, value, 0))
        producer.begin_transaction()
        for key, value in written.timers.changelog().items():
            producer.produce(changelog_topic(group, TIMERS_STORE), value, key, partition=0)
            sent += 1
        producer.commit_transaction(30)
        written.commit({})
    restorer = Restorer(settings.kafka_bootstrap_servers, group, "counter")
    try:
        restorer.add({0: {TIMERS_STORE: tmp_path / "timers" / "0"}})
        wait_for(lambda: restorer.step(0.05) == [0], what="the timers restored")
        backend = restorer.take(0)[TIMERS_STORE]
    finally:
        restorer.close()
    try:
        assert sent == 9  # 4 timers written, 2 replaced, 1 cancelled: no index record (it was 18)
        assert dict(backend.items(b"", None)) == dict(written.timers.backend.items(b"", None))
        restored = PartitionTask(Reminders(), 0, {TIMERS_STORE: backend}, lambda *a: None, lambda: 0, Program)
        restored.process(Record(INPUT, 0, 0, "a", {"at": 500}, 0))  # replaces a@150, found by id
        restored.process(Record(INPUT, 0, 0, "d", {"cancel": True}, 0))
        restored.commit({})
        assert [t["id"] + f"@{t['at']}" for _, t in restored.timers.range("t/", "t0")] == ["c@100", "a@500"]
    finally:
        backend.close()


def test_a_restore_waits_for_a_transaction_not_yet_marked_committed(settings, tmp_path):
    """The end of a changelog is its high watermark, not the last stable offset a
    read_committed lookup answers: the previous owner's last transaction, committed but its
    markers not yet written (or still open), belongs in the restored state. A restore that
    ended at the stable offset would start the task without it."""
    group = topic_name("counter", settings)
    fill_changelog(settings, 30)  # k0, k3, ... on partition 0
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "transactional.id": f"{group}-late"})  # fmt: skip
    producer.init_transactions(30)
    producer.begin_transaction()
    late = orjson.dumps({"count": 99, "sum": 99})
    producer.produce(changelog_topic(group, "totals"), late, b"late", partition=0)
    producer.flush(30)  # written, not committed: the stable offset stays before it
    restorer = Restorer(settings.kafka_bootstrap_servers, group, "counter")
    try:
        restorer.add({0: {"totals": tmp_path / "totals" / "0"}})
        assert restorer.remaining() == 10 + 1 + 1  # the records, the commit marker, the late one
        for _ in range(5):
            assert restorer.step(0.05) == []  # not done while that transaction is open
        producer.commit_transaction(30)
        wait_for(lambda: restorer.step(0.05) == [0], what="partition 0 restored once committed")
        totals = restorer.take(0)["totals"]
        assert totals.get(b"late") == late and totals.get(b"k27") is not None
        totals.close()
    finally:
        restorer.close()
