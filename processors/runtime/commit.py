"""The open Kafka transaction and how it ends: commit, or abort (or a new producer) and rewind.

`Transaction` owns the transactional producer and the open transaction's input positions. Every
~100 ms or N records the loop commits: each dirty store key's final value goes to its changelog
once, the records are flushed, the consumed offsets are sent with the consumer group metadata,
and the transaction commits; only then do store writes reach RocksDB (`task.commit`). On a
failed call the transaction is aborted (or, when the producer hit a fatal error, the producer
replaced: transactions.py), the stores' overlays dropped and the consumer rewound to the
committed offsets. A commit whose outcome is unknown is settled by the committed offsets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from plumbing import observability as m
from processors.runtime.changelog import changelog_topic
from processors.runtime.limits import DEFAULT_LIMIT, RecordTooLarge, too_large
from processors.runtime.options import RuntimeOptions
from processors.runtime.pending import PendingMetrics
from processors.runtime.task import PartitionTask
from processors.runtime.transactions import (
    MAX_RENEWALS,
    TransactionBroken,
    error_of,
    left,
    retrying,
    timed_out,
)

log = logging.getLogger(__name__)


class FatalError(RuntimeError):
    """This instance cannot make progress (a fatal consumer error, no commit within
    `stall_timeout_s`, a producer renewed again and again): it must stop."""


class Transaction:
    """The transactional producer, the open transaction and its input positions.

    `tasks` is the runner's dict of partition tasks (shared, not copied): a commit applies
    their store writes, a rewind drops them. `seek` moves the consumer to a committed offset
    (the runner's: it also resets the stream time there). `after_commit` runs once a commit
    is through (the lag gauges)."""

    def __init__(
        self,
        name: str,
        group: str,
        options: RuntimeOptions,
        tasks: dict[int, PartitionTask],
        store_names: list[str],
        pending: PendingMetrics,
        new_producer: Callable[[], Producer],
        seek: Callable[[TopicPartition], None],
        after_commit: Callable[[], None],
    ) -> None:
        self.name = name
        self.group = group
        self.options = options
        self.tasks = tasks
        self.store_names = store_names
        self.pending = pending
        self.new_producer = new_producer
        self.seek = seek
        self.after_commit = after_commit
        self.producer: Any = None  # set by start()
        self.consumer: Any = None  # set by the runner once its consumer exists
        self.max_record_bytes = DEFAULT_LIMIT
        self.open = False
        self.records = 0
        self.started = 0.0
        self.positions: dict[tuple[str, int], int] = {}
        self.changelog_offsets: dict[tuple[str, int], int] = {}
        self.last_commit = time.monotonic()  # or the last moment nothing was pending
        self.failing = False  # a transaction failed since the last commit
        self.renewals = 0  # producers replaced since the last commit

    def start(self, timeout: float) -> None:
        """The first producer: init_transactions fences a previous instance's epoch."""
        self.producer = self.new_producer()
        retrying(self.producer.init_transactions, time.monotonic() + timeout, what="init_transactions")

    def pending_work(self) -> bool:
        """Records are pending: a transaction is open, or one failed since the last commit."""
        return self.open or self.failing

    def idle(self) -> None:
        """Nothing pending: a quiet loop is not a stalled one."""
        self.failing = False
        self.last_commit = time.monotonic()

    def stall_deadline(self) -> float:
        """When the watchdog gives up: the deadline of every recovery call."""
        return max(self.last_commit + self.options.stall_timeout_s, time.monotonic() + 1)

    def begin(self) -> None:
        if not self.open:
            try:
                self.producer.begin_transaction()
            except KafkaException as exc:
                raise TransactionBroken(error_of(exc)) from exc
            self.open = True
            self.records = 0
            self.started = time.monotonic()
            self.pending.discard()  # counted by a transaction that did not commit

    def advance(self, physical: str, partition: int, offset: int) -> None:
        self.positions[(physical, partition)] = offset + 1
        self.records += 1

    def produce(self, topic: str, key: bytes, value: bytes | None, **kwargs: Any) -> None:
        """Produce into the open transaction; an oversize record raises RecordTooLarge, a
        producer in an error state (e.g. `_STATE` after a broker restart) TransactionBroken."""
        give_up = 0.0
        while True:
            try:
                self.producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:  # the queue drains as records are delivered or time out
                give_up = give_up or time.monotonic() + 2 * self.options.transaction_timeout_ms / 1000
                if time.monotonic() > give_up:
                    raise timed_out("the producer queue stayed full") from None
                self.producer.poll(0.05)
            except KafkaException as exc:
                if not too_large(exc):
                    raise TransactionBroken(error_of(exc)) from exc
                size = len(key or b"") + len(value or b"")
                raise RecordTooLarge(f"a record for {topic}", size, self.max_record_bytes) from exc

    # -- commit -------------------------------------------------------------------------------
    def commit(self, budget: float = 60.0) -> None:
        """Commit the open transaction; every broker call shares one `budget` (seconds).

        Retriable errors retry the call, others end the transaction and rewind (recover). A
        commit whose outcome is unknown (it timed out, or the producer died in it) is settled
        by the committed offsets once the producer is renewed: init_transactions finishes it."""
        if not self.open:
            return
        started = time.monotonic()
        deadline = started + budget
        try:
            pending = self.produce_changelogs()
            self.flush(deadline)
            self.send_offsets(deadline)
        except (KafkaException, TransactionBroken) as exc:
            self.recover(error_of(exc), deadline)
            return
        try:
            retrying(self.producer.commit_transaction, deadline, what="commit_transaction")
        except KafkaException as exc:
            if not self.committed_anyway(error_of(exc), deadline):
                return
        self.committed(pending, started)

    def flush(self, deadline: float) -> None:
        if self.producer.flush(left(deadline)) > 0:
            raise timed_out("records of the transaction not delivered in its time budget")

    def send_offsets(self, deadline: float) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.positions.items()]
        if offsets:
            meta = self.consumer.consumer_group_metadata()
            retrying(lambda timeout: self.producer.send_offsets_to_transaction(offsets, meta, timeout),
                     deadline, what="send_offsets_to_transaction")  # fmt: skip

    def committed(self, pending: dict[tuple[str, int], int], started: float) -> None:
        """The transaction is committed: its writes reach the stores, the watchdog resets."""
        self.open = False
        for partition, task in self.tasks.items():
            task.commit({s: pending[(s, partition)] for s in self.store_names if (s, partition) in pending})
        self.positions.clear()
        self.last_commit = time.monotonic()
        self.failing = False
        self.renewals = 0
        m.COMMIT_LATENCY.labels(self.name).observe(time.monotonic() - started)
        self.pending.apply()  # only now: what the committed transaction counted
        self.after_commit()

    def committed_anyway(self, error: KafkaError, deadline: float) -> bool:
        """commit_transaction failed: end the transaction; True when the broker committed it
        all the same (every input offset of the transaction is the committed one)."""
        positions = dict(self.positions)
        if self.recover(error, deadline, rewind=False) or not positions:
            self.rewind(deadline)  # aborted: it did not commit
            return False
        tps = [TopicPartition(t, p) for t, p in positions]
        committed = {(tp.topic, tp.partition): tp.offset for tp in self.committed_offsets(tps, deadline)}
        if committed == positions:
            log.warning("commit outcome was unknown; the broker has it committed",
                        extra={"error": str(error)})  # fmt: skip
            return True
        self.rewind(deadline)
        return False

    def produce_changelogs(self) -> dict[tuple[str, int], int]:
        """Write each store's changelog records (every written key's final value, once); return
        the offsets they landed at."""
        self.changelog_offsets = {}
        for partition, task in self.tasks.items():
            for name, store in task.stores.items():
                records = store.changelog()
                if not records:
                    continue
                topic = changelog_topic(self.group, name)
                last = len(records) - 1
                for i, (key, value) in enumerate(records.items()):
                    if i == last:
                        self.produce(
                            topic,
                            key,
                            value,
                            partition=partition,
                            on_delivery=self.delivered(name),
                        )
                    else:
                        self.produce(topic, key, value, partition=partition)
        return self.changelog_offsets

    def delivered(self, store: str) -> Any:
        def callback(err: KafkaError | None, msg: Any) -> None:
            if err is None:
                self.changelog_offsets[(store, msg.partition())] = msg.offset()

        return callback

    # -- failure: abort or renew, then rewind --------------------------------------------------
    def recover(self, error: KafkaError, deadline: float, rewind: bool = True) -> bool:
        """A transactional call failed: end the transaction (abort, or renew the producer) and
        rewind to the last commit. True when it was aborted (not renewed)."""
        self.failing = True
        m.ABORTS.labels(self.name).inc()
        log.warning("transaction failed; ending it and rewinding",
                    extra={"error": str(error), "fatal": error.fatal(),
                           "abortable": error.txn_requires_abort()})  # fmt: skip
        aborted = self.end(deadline, error)
        if rewind:
            self.rewind(deadline)
        return aborted

    def end(self, deadline: float, error: KafkaError | None = None) -> bool:
        """Abort the open transaction; when that cannot be done (a fatal error, or the abort
        fails) replace the producer instead. True when aborted."""
        was_open = self.open
        usable = error is None or not error.fatal()
        aborted = was_open and usable and self.abort(deadline)
        self.open = False
        if not aborted and (was_open or error is not None):
            self.renew_producer()
        return aborted

    def abort(self, deadline: float) -> bool:
        try:
            retrying(self.producer.abort_transaction, deadline, floor=5.0, what="abort_transaction")
            return True
        except KafkaException as exc:
            log.warning("abort failed; renewing the producer", extra={"error": str(exc)})
            return False

    def rewind_after_handler(self) -> None:
        """Abort the open transaction (a handler raised) and seek back to the last commit."""
        deadline = self.stall_deadline()
        self.end(deadline)
        m.ABORTS.labels(self.name).inc()
        self.rewind(deadline)

    def renew_producer(self) -> None:
        """A new producer with the same transactional.id: init_transactions fences the old
        epoch and completes or aborts its open transaction. Repeated renewals with no commit
        in between (a live twin fencing us back?) stop the process."""
        self.renewals += 1
        if self.renewals > MAX_RENEWALS:
            raise FatalError(f"producer renewed {MAX_RENEWALS} times without a commit")
        log.warning("renewing the transactional producer", extra={"renewal": self.renewals})
        try:
            self.producer.purge(in_queue=True, in_flight=True, blocking=False)
        except (KafkaException, RuntimeError):
            pass
        self.producer = self.new_producer()
        try:
            retrying(self.producer.init_transactions, self.stall_deadline(), what="init_transactions")
        except KafkaException as exc:
            raise FatalError(f"a new producer could not initialise transactions: {exc}") from exc

    def rewind(self, deadline: float | None = None) -> None:
        """Drop uncommitted state and seek back to the committed offsets (by `deadline`)."""
        for task in self.tasks.values():
            task.abort()
        self.positions.clear()
        assigned = [tp for tp in self.consumer.assignment() if tp.partition in self.tasks]
        if not assigned:  # partitions still restoring seek when they resume
            return
        for tp in self.committed_offsets(assigned, deadline or self.stall_deadline()):
            self.seek(tp)

    def committed_offsets(self, tps: list[TopicPartition], deadline: float) -> list[TopicPartition]:
        """The group's committed offsets, retried while the coordinator is away (until the
        watchdog's deadline at least: a rewind that cannot finish must not go on)."""
        deadline = max(deadline, self.stall_deadline())
        try:
            return retrying(lambda timeout: self.consumer.committed(tps, timeout=timeout), deadline,
                            what="committed")  # fmt: skip
        except KafkaException as exc:
            raise FatalError(f"committed offsets unavailable: {exc}") from exc

    def shutdown(self) -> None:
        """Abort an unfinished transaction (after a failure); the broker times it out else."""
        try:
            if self.open:
                self.open = False
                for task in self.tasks.values():
                    task.abort()
                self.producer.abort_transaction(10)
        except (KafkaException, TransactionBroken):
            log.warning("abort on shutdown failed; the broker will time the transaction out")
