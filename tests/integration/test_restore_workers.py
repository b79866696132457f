"""A large restore spread over worker processes (restore_worker.py) gives the stores one
process would, hands back what a revoke stops, and falls back in-process when a worker fails."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from plumbing import observability as m
from processors.runtime.changelog import Restorer, changelog_topic
from processors.runtime.restore_worker import RestoreWorker
from processors.runtime.store import RocksBackend
from processors.runtime.testing import wait_for
from schemas.topics import topic_name
from tests.integration.test_runtime_restore import fill_changelog

pytestmark = pytest.mark.integration

KEYS = 30_000  # over 3 partitions: key k<i> on partition i % 3, count i


def expected(partition: int) -> dict[bytes, bytes]:
    return {f"k{i}".encode(): orjson.dumps({"count": i, "sum": 2 * i}) for i in range(partition, KEYS, 3)}


def restore_all(restorer: Restorer, paths: dict[int, dict[str, Path]]) -> dict[int, dict[bytes, bytes]]:
    """Drive the restorer as the runner does (add what is not restoring, step) until every
    partition is complete; return each partition's restored totals."""
    restored: dict[int, dict[bytes, bytes]] = {}

    def turn() -> bool:
        if new := {p: s for p, s in paths.items() if p not in restorer.partitions and p not in restored}:
            restorer.add(new)
        for partition in restorer.step(0.05):
            backend = restorer.take(partition)["totals"]
            restored[partition] = dict(backend.items(b"", None))
            backend.close()
        return len(restored) == len(paths)

    wait_for(turn, timeout=60, what="every partition restored")
    return restored


def paths_under(root: Path) -> dict[int, dict[str, Path]]:
    return {p: {"totals": root / "totals" / str(p)} for p in range(3)}


def test_workers_restore_the_same_stores_as_one_process(settings, tmp_path, caplog):
    fill_changelog(settings, KEYS)
    group = topic_name("counter", settings)
    caplog.set_level(logging.INFO, logger="processors.runtime.changelog")
    restorer = Restorer(settings.kafka_bootstrap_servers, group, "counter", workers=2, parallel_min_records=0)
    try:
        restorer.add(paths_under(tmp_path))
        assert restorer.consumer.assignment() == []  # nothing is read in this process
        assert restorer.remaining() == KEYS + 3 * 6  # every record and commit marker, in workers
        handed = [r.partitions for r in caplog.records if r.getMessage() == "restore handed to a worker"]
        assert sorted(p for group in handed for p in group) == [0, 1, 2] and len(handed) == 2
        restored = restore_all(restorer, paths_under(tmp_path))
        assert restorer.restored == {"totals": KEYS}  # the workers' records, counted once
        assert restorer.seconds["totals"] > 0  # the workers' time, credited here
    finally:
        restorer.close()
    assert restored == {p: expected(p) for p in range(3)}
    exits = [r for r in caplog.records if r.getMessage() == "restore worker exited"]
    assert [r.code for r in exits] == [0, 0]


def test_the_parent_shows_what_its_workers_have_left(settings, tmp_path, monkeypatch):
    """stream_restore_remaining_records follows a worker's reports (a worker's own metrics
    are in its own process, which nobody scrapes)."""
    fill_changelog(settings, KEYS)
    group = topic_name("counter", settings)
    report = orjson.dumps({"remaining": 7, "left": [["totals", 0, 7]]}).decode()
    fake = f"import sys, time; print({report!r}, flush=True); time.sleep(60)"
    monkeypatch.setattr(RestoreWorker, "command", [sys.executable, "-c", fake])
    remaining = m.RESTORE_REMAINING.labels("counter", "totals", "0")
    restorer = Restorer(settings.kafka_bootstrap_servers, group, "counter", workers=2, parallel_min_records=0)
    try:
        restorer.add(paths_under(tmp_path))
        assert remaining._value.get() > 7  # the whole backlog when handed out
        wait_for(lambda: restorer.step(0.05) is not None and remaining._value.get() == 7,
                 timeout=30, what="the worker's report shown")  # fmt: skip
    finally:
        restorer.close()


def test_a_revoke_kills_the_worker_and_its_other_partitions_restore_here(settings, tmp_path):
    fill_changelog(settings, KEYS)
    group = topic_name("counter", settings)
    restorer = Restorer(settings.kafka_bootstrap_servers, group, "counter", workers=2, parallel_min_records=0)
    try:
        restorer.add(paths_under(tmp_path))
        restorer.cancel({1})  # revoked while its worker runs (or has run)
        assert 1 not in restorer.partitions
        RocksBackend(tmp_path / "totals" / "1").close()  # its worker is gone: the lock is free
        kept = {p: s for p, s in paths_under(tmp_path).items() if p != 1}
        assert restore_all(restorer, kept) == {p: expected(p) for p in kept}
    finally:
        restorer.close()


def test_a_failed_worker_leaves_its_partitions_to_this_process(settings, tmp_path, monkeypatch, caplog):
    fill_changelog(settings, KEYS)
    group = topic_name("counter", settings)
    monkeypatch.setattr(RestoreWorker, "command", [sys.executable, "-c", "import sys; sys.exit(3)"])
    caplog.set_level(logging.INFO, logger="processors.runtime.changelog")
    restorer = Restorer(settings.kafka_bootstrap_servers, group, "counter", workers=2, parallel_min_records=0)
    try:
        restored = restore_all(restorer, paths_under(tmp_path))
        assert restorer.restored == {"totals": KEYS}
    finally:
        restorer.close()
    assert restored == {p: expected(p) for p in range(3)}
    exits = [r for r in caplog.records if r.getMessage() == "restore worker exited"]
    assert [(r.code, r.levelname) for r in exits] == [(3, "WARNING"), (3, "WARNING")]


def test_a_small_restore_stays_in_process(settings, tmp_path):
    fill_changelog(settings, 300)
    group = topic_name("counter", settings)
    restorer = Restorer(settings.kafka_bootstrap_servers, group, "counter", workers=2)  # 500,000 minimum
    try:
        restorer.add(paths_under(tmp_path))
        assert len(restorer.consumer.assignment()) == 3
    finally:
        restorer.close()



def test_a_worker_dies_with_its_processor(tmp_path):
    """SIGKILL the process that started a worker: the worker goes at once (the kernel's
    parent-death signal), not when its own restore would end, so a restarted processor finds
    no orphan holding its stores' locks. The worker here waits on an unreachable broker, which
    would keep it alive for its 5 s offset lookup: a port that accepts and never answers."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(port), str(tmp_path / "totals" / "0")],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    silent.settimeout(30)
    connection, _ = silent.accept()  # the worker is past its start-up, in its offset lookup
    assert alive(worker)
    parent.kill()
    parent.wait()
    wait_for(lambda: not alive(worker), timeout=2.5, what="the worker gone with its parent")
    connection.close()
    silent.close()
    RocksBackend(tmp_path / "totals" / "0").close()  # its lock is free


PARENT = """
import sys, time
from pathlib import Path
from processors.runtime.restore_worker import RestoreWorker
port, path = sys.argv[1], Path(sys.argv[2])
worker = RestoreWorker(f"127.0.0.1:{port}", "nobody", "counter", {0: {"totals": path}}, 1)
print(worker.proc.pid, flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its new parent to reap it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.parametrize("workers", [1, 2])
def test_a_restore_derives_the_processors_local_index_in_workers_too(settings, tmp_path, workers):
    """A processor's `local_indexes` reach its restore workers (by module name): each restored
    record's index key is written beside it, in this process and in a worker alike."""
    fill_changelog(settings, KEYS)
    restored = restore_with_count_index(settings, tmp_path, workers)
    for p in range(3):
        assert restored[p] == expected(p) | count_index(p)


def restore_with_count_index(settings, tmp_path: Path, workers: int) -> dict[int, dict[bytes, bytes]]:
    """The counter's changelog restored with the test's local index (count_index.py)."""
    group = topic_name("counter", settings)
    index = {"totals": "tests.integration.count_index"}
    restorer = Restorer(settings.kafka_bootstrap_servers, group, "counter", workers=workers,
                        parallel_min_records=0, local_indexes=index)  # fmt: skip
    try:
        return restore_all(restorer, paths_under(tmp_path))
    finally:
        restorer.close()


def count_index(partition: int) -> dict[bytes, bytes]:
    """The index keys count_index.py derives for a partition's totals."""
    return {f"#k{i}".encode(): str(i).encode() for i in range(partition, KEYS, 3)}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_value_its_index_cannot_read_is_restored_unindexed_and_the_restore_goes_on(
    settings, tmp_path, workers
):
    """A changelog value the local index cannot parse (written by hand, or by a bug) does not
    stop the restore, in this process or a worker: the record is restored as it is, without
    its index key, and every other record with theirs."""
    fill_changelog(settings, KEYS)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    topic = changelog_topic(topic_name("counter", settings), "totals")
    producer.produce(topic, b"\xffnot json", b"bad", partition=0)
    assert producer.flush(30) == 0
    restored = restore_with_count_index(settings, tmp_path, workers)
    for p in range(3):
        bad = {b"bad": b"\xffnot json"} if p == 0 else {}
        assert restored[p] == expected(p) | count_index(p) | bad
