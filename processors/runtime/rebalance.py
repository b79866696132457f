"""Rebalancing: partitions assigned, revoked or lost, and the restore of assigned ones.

Assignment is eager with the `range` assignor: co-partitioned input topics give partition N of
every input to the same instance, which owns the task (stores, timers) for N. Assigned
partitions start paused ("held"): the loop restores their stores from the changelogs a slice at
a time (so /healthz stays live while /readyz says "restoring"), then creates the task, seeks to
the committed offsets and resumes, so no record is processed before its partition's state is
whole. A revoke commits the open transaction within `revoke_timeout_s` (else aborts it); a loss
ends it; both close the partitions' tasks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from plumbing import observability as m
from processors.runtime.changelog import Restorer
from processors.runtime.commit import Transaction
from processors.runtime.options import RuntimeOptions
from processors.runtime.task import PartitionTask
from processors.runtime.transactions import error_of

log = logging.getLogger(__name__)

RESTORE_SLICE_S = 0.2  # restore this long per loop turn, then poll, punctuate and commit


class Rebalance:
    """The consumer's assignment callbacks and the partitions held (paused) while restoring.

    `new_task(partition, backends)` opens a restored partition's task; `seek` moves the consumer
    to a committed offset; `on_started` runs after tasks start (the config check); `on_error`
    stops the runner (librdkafka swallows callback errors)."""

    def __init__(
        self,
        name: str,
        group: str,
        options: RuntimeOptions,
        tasks: dict[int, PartitionTask],
        store_names: list[str],
        txn: Transaction,
        new_task: Callable[[int, dict[str, Any]], PartitionTask],
        seek: Callable[[TopicPartition], None],
        on_started: Callable[[], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.name = name
        self.group = group
        self.options = options
        self.tasks = tasks
        self.store_names = store_names
        self.txn = txn
        self.new_task = new_task
        self.seek = seek
        self.on_started = on_started
        self.on_error = on_error
        self.consumer: Any = None  # set by the runner once its consumer exists
        self.restorer: Restorer | None = None
        self.ready = threading.Event()
        # partition -> its input partitions, assigned but paused until its stores are restored
        self.held: dict[int, list[TopicPartition]] = {}
        self.restore_remaining = 0
        self.restore_started = 0.0
        # since when the consumer has had no assignment (it subscribed, or a rebalance revoked
        # or lost its partitions); None once the group assigned it (an empty list counts)
        self.unassigned_since: float | None = time.monotonic()

    def unassigned_for(self) -> float:
        """Seconds the consumer has waited for the group to assign it (0 when assigned)."""
        return 0.0 if self.unassigned_since is None else time.monotonic() - self.unassigned_since

    # -- assignment -----------------------------------------------------------------------------
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            self.assign(partitions)
        except BaseException as exc:  # librdkafka swallows callback errors: stop the loop
            log.exception("assignment failed")
            self.on_error(exc)

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Take the new partitions paused: the loop restores them (no broker call here)."""
        self.unassigned_since = None
        self.consumer.assign(partitions)
        new = [tp for tp in partitions if tp.partition not in self.tasks]
        if new:
            self.consumer.pause(new)
        for tp in new:
            self.held.setdefault(tp.partition, []).append(tp)
        self.restore_started = time.monotonic()
        m.RESTORING.labels(self.name).set(len(self.held))
        log.info("partitions assigned", extra={"partitions": sorted({tp.partition for tp in partitions}),
                                               "restoring": sorted(self.held)})  # fmt: skip
        if not self.held:
            self.mark_ready()

    # -- restore --------------------------------------------------------------------------------
    def restore_step(self) -> None:
        """Restore for one slice, then start every partition whose stores are complete."""
        assert self.restorer is not None
        new = sorted(self.held.keys() - self.restorer.partitions)
        if new:
            try:
                self.restorer.add({p: self.store_paths(p) for p in new})
            except KafkaException as exc:  # the broker is away: the next turn tries again
                if error_of(exc).fatal():
                    raise
                log.warning("restore waits for the broker", extra={"error": str(error_of(exc))})
        self.start_tasks([p for p in self.restorer.step(RESTORE_SLICE_S) if p in self.held])
        self.restore_remaining = self.restorer.remaining()
        m.RESTORING.labels(self.name).set(len(self.held))
        if not self.held:
            self.mark_ready()

    def start_tasks(self, partitions: list[int]) -> None:
        """Open the restored partitions' tasks, seek to the committed offsets and resume."""
        if not partitions:
            return
        assert self.restorer is not None
        tps = [tp for p in partitions for tp in self.held[p]]
        committed = self.txn.committed_offsets(tps, self.txn.stall_deadline())
        for partition in partitions:
            self.tasks[partition] = self.new_task(partition, self.restorer.take(partition))
            del self.held[partition]
        for tp in committed:
            self.seek(tp)
        self.consumer.resume(tps)
        m.ASSIGNED.labels(self.name).set(len(self.tasks))
        self.on_started()  # the version is known before their first record

    def mark_ready(self) -> None:
        seconds = round(time.monotonic() - self.restore_started, 3)
        log.info("partitions ready", extra={"partitions": sorted(self.tasks), "seconds": seconds})
        self.ready.set()

    def store_paths(self, partition: int) -> dict[str, Path]:
        root = Path(self.options.state_dir) / self.group
        return {store: root / store / str(partition) for store in self.store_names}

    # -- revoke and loss ------------------------------------------------------------------------
    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what was processed within `revoke_timeout_s` (else abort), then let go."""
        self.ready.clear()
        self.unassigned_since = time.monotonic()  # until the rebalance assigns again
        if self.txn.open:
            self.txn.commit(self.options.revoke_timeout_s)
        self.release({tp.partition for tp in partitions})

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.ready.clear()
        self.unassigned_since = time.monotonic()
        if self.txn.open:
            self.txn.end(time.monotonic() + self.options.revoke_timeout_s)
            for task in self.tasks.values():
                task.abort()
        self.release({tp.partition for tp in partitions})

    def release(self, partitions: set[int]) -> None:
        """Stop restoring and close the tasks of revoked (or lost) partitions."""
        if self.restorer:
            self.restorer.cancel(partitions)
        for partition in partitions:
            self.held.pop(partition, None)
        m.RESTORING.labels(self.name).set(len(self.held))
        self.close_tasks(partitions)

    def close_tasks(self, partitions: set[int]) -> None:
        still = {tp.partition for tp in self.consumer.assignment()} - partitions
        for partition in partitions - still:
            task = self.tasks.pop(partition, None)
            if task:
                task.close()
        self.txn.positions = {k: v for k, v in self.txn.positions.items() if k[1] in self.tasks}
        m.ASSIGNED.labels(self.name).set(len(self.tasks))
