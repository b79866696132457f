"""Changelog topics: creating them, and restoring a partition's store from one.

Each store of a processor has a compacted `<group>-<store>-changelog` topic with the same
partition count as the inputs. A store's RocksDB keeps the changelog offset it has applied
(the checkpoint); restoring reads from there to the end (read_committed), so an aborted
transaction's records are never applied. A checkpoint outside the topic's offsets (topic
recreated or truncated) is not trusted: the store is wiped and rebuilt from the beginning.

The end is the high watermark read when the restore starts, looked up read_uncommitted: a
read_committed lookup answers the last stable offset, which stops before a transaction whose
commit markers are not written yet (the coordinator writes them after the previous owner's
commit returned), and a restore that ended there would miss that committed transaction's
state. Reading read_committed to the high watermark waits for such a transaction to be marked
(an abandoned one is aborted by its timeout). With transactions the last offsets are
often commit markers, which are never delivered, so a changelog is done when the consumer's
position reaches the end, not when a delivered record's offset + 1 does; a changelog already
at its end (empty, or a checkpoint at the last record) is done without reading at all.

A store's local keys (never logged: the timers' and the ledger's id indexes, local_index.py)
are derived again from each restored record as it is written (`_Reading.derive`).

A large restore (at least `parallel_min_records` changelog records over the partitions added
at once) is spread over worker processes, whole partitions each (restore_worker.py); a
partition comes back to this process when its worker has exited, and is read from the
checkpoints the worker wrote to the end.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rocksdict import WriteBatch

from plumbing import observability as m
from plumbing.kafka_util import check_consumer_error, watermarks
from plumbing.topic_admin import create
from processors.runtime import local_index
from processors.runtime.restore_worker import PARALLEL_MIN_RECORDS, RestoreWorker, split
from processors.runtime.store import RocksBackend
from schemas.settings import Settings

log = logging.getLogger(__name__)
Derive = Callable[[bytes, bytes | None], tuple[bytes, bytes | None] | None]
LOOKUP_TIMEOUT_S = 5.0  # an offset lookup gives up this soon: the loop stays live and retries


def changelog_topic(group: str, store: str) -> str:
    return f"{group}-{store}-changelog"


def ensure_changelogs(settings: Settings, group: str, stores: list[str]) -> None:
    """Create the missing changelog topics (compacted, co-partitioned with the inputs)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    existing = set(admin.list_topics(timeout=30).topics)
    config = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
    create(
        admin,
        [
            NewTopic(
                changelog_topic(group, s), settings.partitions, settings.replication_factor, config=config
            )
            for s in stores
            if changelog_topic(group, s) not in existing
        ],
    )


@dataclass
class _Reading:
    """One changelog partition still being read."""

    store: str
    partition: int
    backend: RocksBackend
    start: int
    end: int
    started: float
    restored: int = 0
    derive: Derive | None = None  # the local keys each record implies (local_index.py)


def _not_indexed(reading: _Reading, msg: Message) -> None:
    """Log a restored record whose local index raised (the restore goes on without it)."""
    where = {"store": reading.store, "partition": msg.partition(), "offset": msg.offset()}
    log.warning("changelog record not indexed", exc_info=True, extra=where)


class Restorer:
    """Restores the stores of many partitions with one consumer, a bounded slice at a time
    (`step`), so the processing loop that drives it stays live while a large state loads."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        processor: str,
        workers: int = 1,
        parallel_min_records: int = PARALLEL_MIN_RECORDS,
        local_indexes: dict[str, str] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.processor = processor
        # store -> its local index's module (the processor's `local_indexes` and the runtime's)
        self.local_indexes = local_index.indexes_of(local_indexes or {})
        self._derive = {store: index.derived for store, index in local_index.load(self.local_indexes).items()}
        self.workers = workers  # worker processes for a large restore; 1: all in this one
        self.parallel_min_records = parallel_min_records
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{group}-restore",  # never joins nor commits: assign() only
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,  # at the end a long poll would delay the next lookup
                "max.partition.fetch.bytes": 8 << 20,  # fewer, larger fetches (1 MB by default)
                "queued.max.messages.kbytes": 128 << 10,
            }
        )
        # the ends (high watermarks) are looked up read_uncommitted: see the module docstring
        self._ends = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{group}-restore-ends",
                "isolation.level": "read_uncommitted",
                "enable.auto.commit": False,
            }
        )
        self._backends: dict[int, dict[str, RocksBackend]] = {}
        self._reading: dict[tuple[str, int], _Reading] = {}
        self._handed: list[RocksBackend] = []  # taken, compactions off until all are restored
        self._workers: list[RestoreWorker] = []
        self._returned: set[int] = set()  # back from a worker: restored here until taken
        self.restored: dict[str, int] = {}  # changelog records applied, by store
        self.seconds: dict[str, float] = {}  # time spent reading each store's changelogs

    @property
    def partitions(self) -> set[int]:
        """Partitions whose stores are opened and not yet taken (restoring or restored), or
        restoring in a worker."""
        return set(self._backends).union(*(w.partitions for w in self._workers))

    def remaining(self) -> int:
        """Changelog records still to read, over every partition being restored."""
        tps = self.consumer.position([TopicPartition(t, p) for t, p in self._reading])
        here = sum(self._remaining(self._reading[(tp.topic, tp.partition)], tp) for tp in tps)
        return here + sum(w.remaining for w in self._workers)

    def remaining_by_store(self) -> dict[tuple[str, int], int]:
        """Records left to read, by (store, partition), of the changelogs being read here."""
        tps = self.consumer.position([TopicPartition(t, p) for t, p in self._reading])
        readings = [(self._reading[(tp.topic, tp.partition)], tp) for tp in tps]
        return {(r.store, r.partition): self._remaining(r, tp) for r, tp in readings}

    def add(self, stores: dict[int, dict[str, Path]]) -> None:
        """Open the stores ({partition: {store: path}}) and start reading each changelog from
        its checkpoint. Offsets are looked up before anything is assigned: the broker answers
        a connection's requests in order, so a lookup queued behind a long-polling fetch waits.
        A partition is added whole or not at all: when a lookup fails (the broker is away) its
        opened stores are closed again and the caller adds it on a later turn."""
        start: list[TopicPartition] = []
        try:
            for partition, paths in stores.items():
                start += self._add_partition(partition, paths)
            start = self._hand_out(set(stores), start)
        finally:
            if start:
                self.consumer.incremental_assign(start)

    def _hand_out(self, added: set[int], start: list[TopicPartition]) -> list[TopicPartition]:
        """Give the partitions just added to worker processes when their restore is large;
        return the reads that stay in this process."""
        backlog = {p: 0 for p in added - self._returned}
        for reading in self._reading.values():
            if reading.partition in backlog:
                backlog[reading.partition] += reading.end - reading.start
        backlog = {p: n for p, n in backlog.items() if n > 0}
        if self.workers < 2 or len(backlog) < 2 or sum(backlog.values()) < self.parallel_min_records:
            return start
        for members in split(backlog, self.workers):
            stores = {p: self._stop_here(p) for p in members}
            worker = RestoreWorker(self.bootstrap, self.group, self.processor, stores,
                                   sum(backlog[p] for p in members), self.local_indexes)  # fmt: skip
            self._workers.append(worker)
            log.info("restore handed to a worker", extra={"partitions": members, "pid": worker.proc.pid,
                                                           "records": worker.remaining})  # fmt: skip
        return [tp for tp in start if tp.partition not in backlog]

    def _stop_here(self, partition: int) -> dict[str, Path]:
        """Close a just-opened partition's stores (nothing written yet) for a worker to open."""
        for key in [k for k, r in self._reading.items() if r.partition == partition]:
            del self._reading[key]
        backends = self._backends.pop(partition)
        for backend in backends.values():
            backend.close()
        return {store: backend.path for store, backend in backends.items()}

    def _add_partition(self, partition: int, paths: dict[str, Path]) -> list[TopicPartition]:
        opened: dict[str, tuple[RocksBackend, int, int]] = {}
        try:
            for store, path in paths.items():
                opened[store] = self._open(store, partition, path)
        except BaseException:
            for backend, _, _ in opened.values():
                backend.close()
            raise
        self._backends[partition] = {}
        start: list[TopicPartition] = []
        for store, (backend, offset, end) in opened.items():
            self._backends[partition][store] = backend
            m.RESTORE_REMAINING.labels(self.processor, store, str(partition)).set(max(0, end - offset))
            if offset < end:
                start.append(TopicPartition(changelog_topic(self.group, store), partition, offset))
                derive = self._derive.get(store)
                self._reading[(start[-1].topic, partition)] = _Reading(
                    store, partition, backend, offset, end, time.monotonic(), derive=derive
                )
        return start

    def _open(self, store: str, partition: int, path: Path) -> tuple[RocksBackend, int, int]:
        """(backend, first offset to read, end), wiping a store whose checkpoint is untrusted."""
        tp = TopicPartition(changelog_topic(self.group, store), partition)
        low, high = watermarks(self._ends, tp, timeout=LOOKUP_TIMEOUT_S)
        # after the lookup: a failed one leaves nothing open. A partition back from a worker
        # is opened for processing at once (what is left to read is a few records, if any):
        # opening each store twice, to read nothing, held up its handover by seconds at 1M
        returned = partition in self._returned
        backend = RocksBackend(path, bulk=not returned, compactions=not returned)
        checkpoint = backend.checkpoint()
        if checkpoint is not None and not (low - 1 <= checkpoint < high):
            log.warning(
                "store checkpoint untrusted, rebuilding from changelog",
                extra={"store": store, "partition": partition, "checkpoint": checkpoint, "high": high},
            )
            backend.close()
            RocksBackend.wipe(path)
            backend = RocksBackend(path, bulk=True)
            checkpoint = None
        return backend, checkpoint + 1 if checkpoint is not None else low, high

    def step(self, budget: float = 0.2) -> list[int]:
        """Read and apply changelog records for about `budget` seconds; return the partitions
        whose every store has reached its end (hand their stores over with `take`)."""
        deadline = time.monotonic() + budget
        self._collect_workers(deadline)
        collecting = gc.isenabled()
        gc.disable()  # a batch is thousands of new Message objects, none in a cycle: the
        try:  # collector would walk them over and over (8% of the restore's time)
            while self._reading:
                self._apply(self.consumer.consume(5000, 0.02))
                self._finish_reached()
                if time.monotonic() >= deadline:
                    break
        finally:
            if collecting:
                gc.enable()
        busy = {r.partition for r in self._reading.values()}
        return sorted(p for p in self._backends if p not in busy)

    def _collect_workers(self, deadline: float) -> None:
        """Take back the partitions of the workers that have exited (the next `add` opens them
        here from their checkpoints). With nothing to read here, wait up to `deadline` for
        one: a partition is handed over as soon as its worker is done."""
        while self._workers:
            for worker in [w for w in self._workers if w.exited() is not None]:
                self._workers.remove(worker)
                self._returned |= worker.partitions
                for store, records in worker.restored.items():
                    self._count(store, records)
                for store, seconds in worker.seconds.items():
                    self._time(store, seconds)
                level = logging.INFO if worker.proc.returncode == 0 else logging.WARNING
                log.log(level, "restore worker exited", extra={
                    "partitions": sorted(worker.partitions), "code": worker.proc.returncode,
                    "records": sum(worker.restored.values())})  # fmt: skip
            for worker in self._workers:  # what it reported, as the parent's metrics
                for store, partition, left in worker.left:
                    m.RESTORE_REMAINING.labels(self.processor, store, str(partition)).set(left)
            if self._reading or time.monotonic() >= deadline or not self._workers:
                return
            time.sleep(0.02)

    def _apply(self, msgs: list) -> None:
        """Write each run of one changelog partition's records, and its checkpoint, in one
        atomic batch. A fetch delivers a partition's records in runs, so the loop does no more
        per record than read its key, value and partition (~13M records at 1M customers)."""
        current: tuple[str, int] | None = None
        reading: _Reading | None = None
        batch = last = derive = None
        count = 0
        for msg in msgs:
            if msg.error() is not None:
                check_consumer_error(msg.error())
                log.warning("changelog read error, retrying", extra={"error": str(msg.error())})
                continue
            tp = (msg.topic(), msg.partition())
            if tp != current:
                if reading is not None and last is not None:
                    self._write(reading, batch, last.offset(), count)
                current, reading, last, count = tp, self._reading.get(tp), None, 0
                batch = WriteBatch(raw_mode=True)
                derive = reading.derive if reading is not None else None
            if reading is None:
                continue  # cancelled while its records were on the way
            key, value = msg.key(), msg.value()
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
            if derive is not None:
                try:
                    local = derive(key, value)
                except Exception:  # a value its index cannot read: restored as it is, unindexed
                    _not_indexed(reading, msg)
                    local = None
                if local is not None:
                    if local[1] is None:
                        batch.delete(local[0])
                    else:
                        batch.put(local[0], local[1])
            last = msg
            count += 1
        if reading is not None and last is not None:
            self._write(reading, batch, last.offset(), count)

    @staticmethod
    def _write(reading: _Reading, batch: WriteBatch, offset: int, count: int) -> None:
        reading.backend.write_restored(batch, offset)
        reading.restored += count

    def _finish_reached(self) -> None:
        """Stop reading the changelog partitions whose position reached their end."""
        tps = [TopicPartition(t, p) for t, p in self._reading]
        done = []
        for tp in self.consumer.position(tps):
            reading = self._reading[(tp.topic, tp.partition)]
            remaining = self._remaining(reading, tp)
            m.RESTORE_REMAINING.labels(self.processor, reading.store, str(tp.partition)).set(remaining)
            if remaining == 0:
                done.append(tp)
                self._report(self._reading.pop((tp.topic, tp.partition)))
                reading.backend.start_flush()
        if done:
            self.consumer.incremental_unassign(done)

    @staticmethod
    def _remaining(reading: _Reading, position: TopicPartition) -> int:
        """Offsets left to the end (commit markers included); the position is unknown (< 0)
        until the first fetch."""
        return max(0, reading.end - (position.offset if position.offset >= 0 else reading.start))

    def _report(self, reading: _Reading) -> None:
        seconds = time.monotonic() - reading.started
        self._count(reading.store, reading.restored)
        self._time(reading.store, seconds)
        log.info(
            "store restored",
            extra={"store": reading.store, "partition": reading.partition, "records": reading.restored,
                   "seconds": round(seconds, 3)},
        )  # fmt: skip

    def _count(self, store: str, records: int) -> None:
        self.restored[store] = self.restored.get(store, 0) + records
        m.RESTORE_RECORDS.labels(self.processor, store).inc(records)

    def _time(self, store: str, seconds: float) -> None:
        self.seconds[store] = self.seconds.get(store, 0.0) + seconds
        m.RESTORE_SECONDS.labels(self.processor, store).inc(seconds)

    def take(self, partition: int) -> dict[str, RocksBackend]:
        """The restored stores of `partition`, now owned by the caller: flushed (what a restore
        wrote survives a SIGKILL from now on) and reopened for processing."""
        backends = self._backends.pop(partition)
        self._returned.discard(partition)  # a later assignment may hand it out again
        for backend in backends.values():
            backend.start_flush()  # the stores flush together, not one after another
        for backend in backends.values():
            backend.end_bulk(compactions=False)
        self._handed.extend(backends.values())
        self._resume_when_done()
        return backends

    def _resume_when_done(self) -> None:
        """Once nothing is restoring, the handed-over stores compact (and compress) their
        restored files: until then that work would take the CPU the restore runs on."""
        if not self._backends and not self._workers:
            for backend in self._handed:
                backend.resume_compactions()
            self._handed.clear()

    def cancel(self, partitions: set[int]) -> None:
        """Stop restoring `partitions` (revoked): what was applied so far stays, checkpointed."""
        for worker in [w for w in self._workers if w.partitions & partitions]:
            worker.kill()  # its other partitions are added again, from their checkpoints
            self._workers.remove(worker)
        self._returned -= partitions
        stop = [TopicPartition(t, p) for t, p in self._reading if p in partitions]
        for tp in stop:
            del self._reading[(tp.topic, tp.partition)]
        if stop:
            self.consumer.incremental_unassign(stop)
        for partition in partitions & self.partitions:
            for backend in self._backends.pop(partition).values():
                backend.close()
        self._resume_when_done()

    def close(self) -> None:
        self.cancel(self.partitions)
        self.consumer.close()
        self._ends.close()

