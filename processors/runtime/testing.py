"""Run a processor in memory, without Kafka, for unit tests.

Same task/store/timer code as the real runner; each `send` or `advance` is one committed
"transaction". Values emitted are returned as dicts (not Avro-encoded), but they are checked
against the topic's Avro schema so a contract break fails the unit test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from processors.runtime import local_index
from processors.runtime.api import Processor, Record
from processors.runtime.clock import ManualClock
from processors.runtime.partitioner import partition_for
from processors.runtime.pending import PendingMetrics
from processors.runtime.store import Backend, MemoryBackend
from processors.runtime.task import TIMERS_STORE, PartitionTask
from schemas.codec import default_codec
from schemas.program import Program
from schemas.topics import schema_for

Emitted = tuple[str, str, dict[str, Any]]
FIRE_LIMIT = 1000  # timers fired per PartitionTask.fire_due call
T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float = 30.0, what: str = "", interval: float = 0.05) -> T:
    """Poll `check` until it returns a truthy value and return that value; fail the test with
    `what` after `timeout` seconds. Tests wait on conditions with this, never on fixed sleeps."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: last {value!r}")
        time.sleep(interval)


class TestDriver:
    """Feed records and move a manual clock; inspect emitted records and stores."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        processor: Processor,
        program: Program | None = None,
        now: int = 1_700_000_000_000,
        partitions: int = 1,
        backend: Callable[[], Backend] = MemoryBackend,
        check_outputs: bool = True,
        keep_changelogs: bool = False,
    ) -> None:
        self.processor = processor
        self.backend = backend  # one per store and partition
        self.check_outputs = check_outputs  # False: outputs as emitted (a backtest's speed)
        self.program = program or Program()
        self.clock = ManualClock(now)
        self.partitions = partitions
        self.emitted: list[Emitted] = []
        self._batch: list[Emitted] = []
        self._offsets: dict[tuple[str, int], int] = {}
        self.pending = PendingMetrics()  # ctx.count: applied at each commit, as the runner does
        # (store, partition) -> every changelog record committed, in order (`restarted`)
        self.changelogs: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] | None = (
            {} if keep_changelogs else None
        )
        self.tasks = {p: self._task(p) for p in range(partitions)}

    def _task(self, partition: int, backends: dict[str, Backend] | None = None) -> PartitionTask:
        names = [*self.processor.stores, TIMERS_STORE]
        return PartitionTask(
            self.processor,
            partition,
            backends or {n: self.backend() for n in names},
            self._emit,
            self.clock.now_ms,
            lambda: self.program,
            pending=self.pending,
        )

    def _emit(self, topic: str, key: str, value: dict[str, Any]) -> None:
        schema = schema_for(topic) if self.check_outputs else None
        if schema:
            codec = default_codec()
            value = codec.decode(codec.encode(schema, value), schema)
        self._batch.append((topic, key, value))

    def partition_for(self, key: str) -> int:
        """The partition production's murmur2_random producers put `key` on."""
        return partition_for(key.encode(), self.partitions)

    def _commit(self) -> list[Emitted]:
        for partition, task in self.tasks.items():
            if self.changelogs is not None:
                for name, store in task.stores.items():
                    self.changelogs.setdefault((name, partition), []).extend(store.changelog().items())
            task.commit({})
        self.pending.apply()
        out, self._batch = self._batch, []
        self.emitted.extend(out)
        return out

    def send(self, topic: str, key: str, value: dict[str, Any]) -> list[Emitted]:
        """Process one record (value as the topic's Avro record, defaults filled in)."""
        schema = schema_for(topic)
        if schema:
            codec = default_codec()
            value = codec.decode(codec.encode(schema, value), schema)
        partition = self.partition_for(key)
        offset = self._offsets.get((topic, partition), 0)
        self._offsets[(topic, partition)] = offset + 1
        record = Record(topic, partition, offset, key, value, self.clock.now_ms())
        try:
            self.tasks[partition].process(record)
        except Exception:
            for task in self.tasks.values():
                task.abort()
            self._batch = []
            self.pending.discard()
            raise
        return self._commit()

    def advance(self, ms: int | float) -> list[Emitted]:
        """Move the clock and fire every timer that came due, as the punctuator would."""
        now = self.clock.advance(ms)
        for task in self.tasks.values():
            while task.fire_due(now, FIRE_LIMIT) == FIRE_LIMIT:  # more were due than one call fires
                pass
        return self._commit()

    def apply_config(self, program: Program) -> list[Emitted]:
        self.program = program
        for task in self.tasks.values():
            task.on_config(program)
        return self._commit()

    def restarted(self, processor: Processor) -> TestDriver:
        """A driver for `processor` (a new instance: it starts as after a crash) on stores rebuilt
        from this driver's changelogs (`keep_changelogs`) the way a restore writes them, local
        indexes derived again, at the same time and program: what a cold restart finds."""
        assert self.changelogs is not None, "keep_changelogs=True keeps what a restart reads"
        driver = TestDriver(processor, self.program, self.clock.now_ms(), self.partitions,
                            check_outputs=self.check_outputs, keep_changelogs=True)  # fmt: skip
        indexes = local_index.load(local_index.indexes_of(processor.local_indexes))
        for (name, partition), records in self.changelogs.items():
            backend = driver.tasks[partition].stores[name].backend
            for key, value in records:
                backend.write(local_index.restored(key, value, indexes.get(name)), None)
            driver.changelogs[(name, partition)] = list(records)  # type: ignore[index]
        # tasks read their timers when made: made again on the filled stores
        backends = {p: {n: s.backend for n, s in t.stores.items()} for p, t in driver.tasks.items()}
        driver.tasks = {p: driver._task(p, backends[p]) for p in range(self.partitions)}
        return driver

    def store(self, name: str, partition: int = 0) -> dict[str, Any]:
        return dict(self.tasks[partition].stores[name].range())

    def outputs(self, topic: str) -> list[dict[str, Any]]:
        return [v for t, _, v in self.emitted if t == topic]
