"""What a RocksDB store holds after its process dies without closing it (SIGKILL, os._exit):
a processing store keeps its last committed batch (WAL on), a restore's bulk load keeps what
it flushed, and data and checkpoint always come from the same batch. And a restored store
compacts only once the restorer lets it."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

from rocksdict import WriteBatch

from processors.runtime.store import RocksBackend
from processors.runtime.testing import wait_for


def _child(work: Callable[[Path], RocksBackend], path: Path) -> None:
    backend = work(path)  # kept open: closing (even by garbage collection) would flush
    os._exit(0 if backend else 1)  # no close, no flush: as a SIGKILL leaves it


def crash_after(work: Callable[[Path], RocksBackend], path: Path) -> None:
    """Run `work` in a fresh process (not forked: RocksDB's threads do not survive a fork)
    that then dies without closing anything."""
    process = multiprocessing.get_context("spawn").Process(target=_child, args=(work, path))
    process.start()
    process.join(60)
    assert process.exitcode == 0


def restored(backend: RocksBackend, records: dict[bytes, bytes], offset: int) -> None:
    batch = WriteBatch(raw_mode=True)
    for key, value in records.items():
        batch.put(key, value)
    backend.write_restored(batch, offset)


def commits(path: Path) -> RocksBackend:
    backend = RocksBackend(path)
    for n in range(2, 10):
        backend.write({b"k": str(n).encode(), f"k{n}".encode(): b"x"}, 10 + n)
    return backend


def restore_then_process(path: Path) -> RocksBackend:
    backend = RocksBackend(path, bulk=True)
    restored(backend, {f"k{i}".encode(): b"v" for i in range(1000)}, 999)
    backend.end_bulk()  # the restorer's take(): flushed, reopened with the WAL
    backend.write({b"k0": b"new"}, 1000)
    return backend


def bulk_then_die(path: Path) -> RocksBackend:
    backend = RocksBackend(path, bulk=True)
    restored(backend, {b"b": b"2"}, 1)  # no WAL, not flushed
    return backend


def test_a_killed_processing_store_reopens_at_its_last_commit(tmp_path):
    path = tmp_path / "db"
    backend = RocksBackend(path)
    backend.write({b"k": b"1"}, 5)
    backend.close()

    crash_after(commits, path)
    backend = RocksBackend(path)
    # nothing flushed, yet every commit is there: a restart replays only what came after
    assert (backend.get(b"k"), backend.get(b"k9"), backend.checkpoint()) == (b"9", b"x", 19)
    backend.close()


def test_a_restore_survives_a_kill_once_its_store_is_taken_for_processing(tmp_path):
    path = tmp_path / "db"
    crash_after(restore_then_process, path)
    backend = RocksBackend(path)
    assert backend.checkpoint() == 1000
    assert backend.get(b"k0") == b"new" and backend.get(b"k999") == b"v"
    backend.close()


def test_a_restore_killed_midway_keeps_data_and_checkpoint_together(tmp_path):
    path = tmp_path / "db"
    backend = RocksBackend(path, bulk=True)
    restored(backend, {b"a": b"1"}, 0)
    backend.close()  # a revoked restore: what was applied stays, checkpointed

    crash_after(bulk_then_die, path)
    backend = RocksBackend(path, bulk=True)
    assert (backend.get(b"a"), backend.checkpoint()) == (b"1", 0)
    assert backend.get(b"b") is None  # lost with its checkpoint: restore reads offset 1 again
    backend.end_bulk()
    backend.close()


def test_a_bulk_loaded_store_reopens_for_processing_and_back(tmp_path):
    path = tmp_path / "db"
    backend = RocksBackend(path, bulk=True)
    restored(backend, {b"a": b"1", b"b": b"2"}, 7)
    backend.end_bulk()
    assert not backend.bulk
    backend.write({b"c": b"3"}, 8)
    assert [k for k, _ in backend.items(b"", None)] == [b"a", b"b", b"c"]
    backend.close()
    backend = RocksBackend(path, bulk=True)  # the next restart's restore
    assert backend.checkpoint() == 8
    backend.end_bulk()
    assert backend.get(b"b") == b"2"
    backend.close()


def test_a_restored_store_compacts_only_once_compactions_resume(tmp_path):
    backend = RocksBackend(tmp_path / "db", bulk=True)
    for n in range(6):  # six level-0 files, over RocksDB's compaction trigger of 4
        restored(backend, {f"k{n}-{i}".encode(): b"v" * 100 for i in range(100)}, n)
        backend.db.flush(True)
    backend.end_bulk(compactions=False)
    backend.write({b"k": b"1"}, 6)
    backend.db.flush(True)
    assert backend.db.property_int_value("rocksdb.num-files-at-level0") == 7
    backend.resume_compactions()
    wait_for(lambda: backend.db.property_int_value("rocksdb.num-files-at-level0") < 4, 30,
             "the level-0 files compacted")  # fmt: skip
    assert backend.get(b"k3-7") == b"v" * 100 and backend.checkpoint() == 6
    backend.close()
