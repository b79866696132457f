"""The processing loop: consume -> process -> produce, exactly once, with Kafka transactions.

One transactional producer per process (`transactional.id` = group + instance id, stable across
restarts so a restarted instance fences its zombie and aborts its open transaction at once).
Every ~100 ms or N records (up to 1 s while catching up on a backlog) the loop commits the
open transaction (commit.py); a watchdog exits when nothing commits for `stall_timeout_s`.
Assigned partitions are restored before they resume (rebalance.py).

This module is the Runner's lifecycle and its loop: a turn restores a slice, polls, processes
each record in the open transaction (forwarding one on the wrong partition, dead-lettering one
that cannot be decoded or whose handler raised), fires due timers, reacts to a new program
config and commits when due. The parts it composes:

- options.py: RuntimeOptions, commit_due;
- clients.py: the producer's and the consumer's configs;
- startup.py: co-partitioning and the record-size limit, checked at start;
- commit.py: the transaction (produce, commit, abort or renew, rewind);
- rebalance.py: assign / revoke / lost, restore and task start / close.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from plumbing import observability as m
from plumbing.config_table import ProgramTable
from plumbing.kafka_util import check_consumer_error
from processors.runtime.api import Processor, Record
from processors.runtime.changelog import Restorer, changelog_topic, ensure_changelogs
from processors.runtime.clients import consumer_config, producer_config
from processors.runtime.commit import FatalError, Transaction
from processors.runtime.dead_letters import (
    DECODE_ERRORS,
    POLICIES,
    DeadLetter,
    Tombstone,
    dlq_topic,
    ensure_dlq_topic,
    timer_value,
)
from processors.runtime.limits import DEFAULT_LIMIT, RecordTooLarge
from processors.runtime.options import RuntimeOptions, commit_due
from processors.runtime.partitioner import partition_for
from processors.runtime.pending import PendingMetrics
from processors.runtime.rebalance import Rebalance
from processors.runtime.startup import PartitionMismatch, check_copartitioned, written_limit
from processors.runtime.task import TIMERS_STORE, PartitionTask, TimerFailed
from processors.runtime.transactions import TransactionBroken
from schemas.codec import default_codec
from schemas.settings import Settings
from schemas.topics import base_name, schema_for, topic_name

__all__ = ["FatalError", "PartitionMismatch", "Runner", "RuntimeOptions", "check_copartitioned", "commit_due"]

log = logging.getLogger(__name__)

# Timers fire for at most this long per loop turn (all partitions together), so polling,
# committing and the transaction timeout stay unaffected by a large due backlog.
TIMER_SLICE_S = 0.5


class Runner:
    """Runs one Processor; `run()` blocks, `start()` runs it in a thread, `stop()` ends it."""

    def __init__(self, processor: Processor, settings: Settings, options: RuntimeOptions | None = None):
        self.processor = processor
        self.settings = settings
        self.options = options or RuntimeOptions()
        self.group = topic_name(processor.name, settings)
        self.codec = default_codec()
        self.tasks: dict[int, PartitionTask] = {}
        self.config_version = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_loop = time.monotonic()
        self._lag_updated = 0.0
        self.error: BaseException | None = None
        self._topics = {b: topic_name(b, settings) for b in {*processor.inputs, *processor.outputs}}
        self._input_topics = [self._topics[t] for t in processor.inputs]
        self._schemas = {t: schema_for(t) for t in processor.outputs}
        self._inputs: dict[str, tuple[str, str | None]] = {}
        # counters of the open transaction: applied when it commits, dropped when the next one
        # begins without a commit in between (pending.py); handlers add through ctx.count
        self.pending = PendingMetrics()
        self._lag = m.LagReport(processor.name)
        self._latency = m.PROCESS_LATENCY.labels(processor.name)
        self.health: m.HealthServer | None = None
        self.program_table = ProgramTable(settings)
        if self.options.error_policy not in POLICIES:
            raise ValueError(f"error_policy must be one of {POLICIES}, not {self.options.error_policy!r}")
        self.dlq = topic_name(dlq_topic(processor.name), settings)
        # records (topic, partition, offset) and timers (id) whose handler raised: the
        # transaction was rewound, and when the loop meets them again they are dead-lettered
        self._poison: dict[tuple[str, int, int], BaseException] = {}
        self._poison_timers: dict[str, BaseException] = {}
        self._timer_turn = 0  # rotates which task fires timers first (_timer_order)
        self.max_record_bytes = DEFAULT_LIMIT
        # timers wait for the backlog: per input (topic, partition), the timestamp of the last
        # record processed, and the offset the consumer was last sought to
        self._stream_ts: dict[tuple[str, int], int] = {}
        self._partition_cache: dict[bytes, int] = {}  # key -> murmur2 partition
        self._sought: dict[tuple[str, int], int] = {}
        stores = self._store_names()
        self.txn = Transaction(processor.name, self.group, self.options, self.tasks, stores, self.pending,
                               self._producer, self._seek, self._update_lag)  # fmt: skip
        self.rebalance = Rebalance(processor.name, self.group, self.options, self.tasks, stores, self.txn,
                                   self._task, self._seek, self._check_config, self._fail)  # fmt: skip
        self.ready = self.rebalance.ready

    @property
    def in_txn(self) -> bool:
        """A transaction is open (records processed since the last commit)."""
        return self.txn.open

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> Runner:
        self._thread = threading.Thread(target=self._run_catching, name=f"runner-{self.group}", daemon=True)
        self._thread.start()
        return self

    def _run_catching(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # surfaced to the thread's owner via .error
            self.error = exc
            log.exception("runner stopped with an error")

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)

    def _fail(self, exc: BaseException) -> None:
        """A rebalance callback failed: stop the loop with its error."""
        self.error = exc
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: finish the current transaction, close stores, leave the group."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())

    def healthy(self) -> bool:
        """Liveness: the loop turns (it does while restoring too), nothing failed, and it
        commits what it processes (not stalled for half the watchdog's limit)."""
        now = time.monotonic()
        half = self.options.stall_timeout_s / 2
        stalled = (self.txn.pending_work() and now - self.txn.last_commit > half
                   or self.rebalance.unassigned_for() > half)  # fmt: skip
        return self.error is None and now - self._last_loop < 30 and not stalled

    def last_turn(self) -> float:
        """When the loop last turned (monotonic): the hard watchdog (watchdog.py) reads it."""
        return self._last_loop

    def stopping(self) -> bool:
        return self._stop.is_set()

    def readiness(self) -> dict[str, Any]:
        """Readiness (/readyz): healthy, and every assigned partition restored and resumed."""
        if not self.healthy():
            return {"status": "unhealthy"}
        if self.rebalance.held:
            return {"status": "restoring", "partitions": sorted(self.rebalance.held),
                    "remaining_records": self.rebalance.restore_remaining}  # fmt: skip
        if not self.ready.is_set():
            return {"status": "starting"}
        return {"status": "ok", "partitions": len(self.tasks)}

    def run(self) -> None:
        ensure_changelogs(self.settings, self.group, self._store_names())
        changelogs = [changelog_topic(self.group, s) for s in self._store_names()]
        check_copartitioned(self.settings, [*(self._topics[t] for t in self.processor.inputs), *changelogs])
        if self.options.error_policy == "dlq":
            ensure_dlq_topic(self.settings, self.dlq)
        self.max_record_bytes = self.txn.max_record_bytes = self._record_limit(changelogs)
        self.program_table.start()
        if self.options.metrics_port is not None:
            port = self.options.metrics_port
            self.health = m.HealthServer(port, self.healthy, ready=self.readiness).start()
            log.info("health and metrics served", extra={"port": self.health.port})
        self.txn.start(30)
        self.rebalance.restorer = Restorer(
            self.settings.kafka_bootstrap_servers,
            self.group,
            self.processor.name,
            workers=self.options.restore_workers,
            parallel_min_records=self.options.restore_parallel_min_records,
            local_indexes=self.processor.local_indexes,
        )
        self.consumer = self.txn.consumer = self.rebalance.consumer = self._consumer()
        self.consumer.subscribe(
            [self._topics[t] for t in self.processor.inputs],
            on_assign=self.rebalance.on_assign,
            on_revoke=self.rebalance.on_revoke,
            on_lost=self.rebalance.on_lost,
        )
        log.info(
            "processor started",
            extra={"processor": self.group, "instance": self.options.instance_id},
        )
        self.txn.last_commit = self.rebalance.unassigned_since = time.monotonic()
        try:
            self._loop()
            self.txn.commit()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        """Abort an unfinished transaction (after a failure), leave the group, close stores."""
        try:
            self.txn.shutdown()
        finally:
            try:
                self.consumer.close()
            except Exception as exc:  # noqa: BLE001 (KafkaError is raised bare): leave anyway
                log.warning("consumer close failed", extra={"error": str(exc)})
            finally:
                for task in self.tasks.values():
                    task.close()
                self.tasks.clear()
                if self.rebalance.restorer:
                    self.rebalance.restorer.close()
                self.program_table.stop()
                if self.health:
                    self.health.stop()
        log.info("processor stopped", extra={"processor": self.group})

    def _record_limit(self, changelogs: list[str]) -> int:
        """message.max.bytes at or below every written topic's limit (see limits.py)."""
        written = [*(self._topics[t] for t in self.processor.outputs), *changelogs]
        if self.options.error_policy == "dlq":
            written.append(self.dlq)
        return written_limit(self.settings, self.options, written)

    # -- Kafka clients and tasks ------------------------------------------------------------
    def _producer(self) -> Producer:
        return Producer(producer_config(self.settings, self.group, self.options, self.max_record_bytes))

    def _consumer(self) -> Consumer:
        return Consumer(consumer_config(self.settings, self.group, self.options))

    def _store_names(self) -> list[str]:
        return [*self.processor.stores, TIMERS_STORE]

    def _task(self, partition: int, backends: dict[str, Any]) -> PartitionTask:
        return PartitionTask(
            self.processor,
            partition,
            backends,
            self._emit,
            self.options.clock.now_ms,
            self.program_table.current,
            self.max_record_bytes,
            pending=self.pending,
        )

    # -- the loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._turn()
            except TransactionBroken as broken:  # from produce() or begin_transaction()
                self.txn.recover(broken.error, self.txn.stall_deadline())

    def _turn(self) -> None:
        """One turn: restore a slice, poll, process, fire timers, commit when due."""
        opts = self.options
        txn = self.txn
        self._last_loop = time.monotonic()
        self._watchdog()
        if self.rebalance.held:
            self.rebalance.restore_step()
        wait = 0 if self.rebalance.held else 0.005 if txn.open else 0.02
        msgs = self.consumer.consume(opts.poll_batch, wait)
        if not msgs and not txn.open:  # nothing pending: a quiet loop is not a stalled one
            txn.idle()
            self._update_lag()  # an idle processor's lag (0, or partitions it lost) stays fresh
        for msg in msgs:
            if msg.error():
                check_consumer_error(msg.error())  # ConsumerFailed: the process must restart
                continue
            if not self._process(msg):
                break  # rewound: the rest of this poll is read again
        self._punctuate()
        self._check_config()
        elapsed_ms = (time.monotonic() - txn.started) * 1000
        if txn.open and commit_due(opts, txn.records, elapsed_ms, len(msgs) >= opts.poll_batch):
            txn.commit()

    def _watchdog(self) -> None:
        """Exit (FatalError -> exit 1) when records are pending and nothing committed for
        `stall_timeout_s`: a supervisor restart beats a live process that does nothing."""
        stalled = time.monotonic() - self.txn.last_commit
        if self.txn.pending_work() and stalled > self.options.stall_timeout_s:
            raise FatalError(f"no transaction committed for {stalled:.0f}s with records pending")
        if (unassigned := self.rebalance.unassigned_for()) > self.options.stall_timeout_s:
            # a join that never completes (seen when a broker SIGKILL landed during the join:
            # librdkafka never joined again, no error, the group empty, for good)
            raise FatalError(f"no partitions assigned for {unassigned:.0f}s: not in the consumer group")

    def _process(self, msg: Any) -> bool:
        """Process one message in the open transaction; False when the handler raised and the
        transaction was rewound (the record is dead-lettered when the loop reaches it again)."""
        partition = msg.partition()
        task = self.tasks.get(partition)
        if task is None:  # not ours any more (revoked mid-batch)
            return True
        self.txn.begin()
        physical = msg.topic()
        offset = msg.offset()
        if (right := self._key_partition(msg)) != partition:
            self._forward(msg, right)
            return True
        self._stream_ts[(physical, partition)] = msg.timestamp()[1]
        topic, schema = self._inputs.get(physical) or self._input_info(physical)
        try:
            record = self._record(msg, topic, schema)
        except DECODE_ERRORS as exc:
            self._dead_letter(msg, "undecodable", exc)
            return True
        failure = self._poison.pop((physical, partition, offset), None)
        if failure is not None:
            self._dead_letter(msg, "processing", failure)
            return True
        started = time.perf_counter()
        try:
            task.process(record)
        except Exception as exc:
            if self.options.error_policy == "fail":
                raise
            self._poison[(physical, partition, offset)] = exc
            log.warning("handler raised; rewinding to dead-letter the record",
                        extra={"topic": topic, "partition": partition, "offset": offset,
                               "error": repr(exc)})  # fmt: skip
            self.txn.rewind_after_handler()
            return False
        self._latency.observe(time.perf_counter() - started)
        self._count(m.RECORDS_IN, topic)
        self.txn.advance(physical, partition, offset)
        return True

    def _key_partition(self, msg: Any) -> int:
        """The partition murmur2 gives the record's key (its own when not routed by key)."""
        key = msg.key()
        if key is None or not self.processor.route_by_key:
            return msg.partition()
        right = self._partition_cache.get(key)
        if right is None:
            if len(self._partition_cache) > 200_000:
                self._partition_cache.clear()
            right = self._partition_cache[key] = partition_for(key, self.settings.partitions)
        return right

    def _forward(self, msg: Any, right: int) -> None:
        """A record on the wrong partition (its producer used another partitioner, e.g.
        librdkafka's default crc32) would split its customer's state over two tasks: it is
        forwarded, bytes and headers as they are, to its key's partition, in this transaction."""
        self.txn.produce(msg.topic(), msg.key(), msg.value(), partition=right, headers=msg.headers())
        self.txn.advance(msg.topic(), msg.partition(), msg.offset())
        self.pending.add(m.REROUTED, (self.processor.name, base_name(msg.topic(), self.settings)))

    def _record(self, msg: Any, topic: str, schema: str | None) -> Record:
        raw = msg.value()
        if raw is None:
            raise Tombstone("record without a value (tombstone)")
        value = self.codec.decode(raw, schema) if schema else orjson.loads(raw)
        if not isinstance(value, dict):
            raise TypeError(f"value is {type(value).__name__}, not a record")
        key = msg.key()
        return Record(topic, msg.partition(), msg.offset(), key.decode() if key else None, value,
                      msg.timestamp()[1])  # fmt: skip

    def _dead_letter(self, msg: Any, reason: str, error: BaseException) -> None:
        """Move past `msg` in this transaction, its original bytes on the dead-letter topic."""
        if self.options.error_policy == "fail":
            raise error
        letter = DeadLetter(reason, error, self.processor.name, msg.topic(), msg.partition(),
                            msg.offset(), self.config_version)  # fmt: skip
        try:
            self.txn.produce(self.dlq, msg.key(), msg.value(), headers=letter.headers())
        except RecordTooLarge:  # the letter's headers pushed it over: keep the why, not the bytes
            dropped = [*letter.headers(), ("dlq.value.dropped", b"too large")]
            self.txn.produce(self.dlq, msg.key(), None, headers=dropped)
        self.txn.advance(msg.topic(), msg.partition(), msg.offset())
        self.pending.add(m.DEAD_LETTERS, (self.processor.name, reason))
        letter.log()

    def _dead_letter_timer(self, timer: Any, error: BaseException) -> None:
        letter = DeadLetter("timer", error, self.processor.name, "", -1, -1, self.config_version)
        self.txn.produce(self.dlq, timer.key.encode(), timer_value(timer), headers=letter.headers())
        self.pending.add(m.DEAD_LETTERS, (self.processor.name, "timer"))
        letter.log()

    def _input_info(self, physical: str) -> tuple[str, str | None]:
        topic = base_name(physical, self.settings)
        self._inputs[physical] = (topic, schema_for(topic))
        return self._inputs[physical]

    def _count(self, metric: Any, topic: str) -> None:
        """Records in or out of the open transaction (counted when it commits)."""
        self.pending.add(metric, (self.processor.name, topic))

    def _emit(self, topic: str, key: str, value: dict[str, Any]) -> None:
        schema = self._schemas.get(topic) or schema_for(topic)
        data = self.codec.encode(schema, value) if schema else orjson.dumps(value)
        self.txn.produce(self._topics[topic], key.encode(), data)
        self._count(m.RECORDS_OUT, topic)

    def _seek(self, tp: TopicPartition) -> None:
        """Seek to a committed offset (the beginning when none): the stream time starts over."""
        tp.offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        self._sought[(tp.topic, tp.partition)] = tp.offset
        self._stream_ts.pop((tp.topic, tp.partition), None)
        self.consumer.seek(tp)

    def _update_lag(self) -> None:
        """Refresh the lag gauges from cached watermarks, at most every few seconds."""
        now = time.monotonic()
        if now - self._lag_updated < 5:
            return
        self._lag_updated = now
        self._lag.update(m.position_lags(self.consumer, self.settings))

    # -- timers and config --------------------------------------------------------------------
    def _punctuate(self) -> None:
        if not self.tasks:
            return
        now = self.options.clock.now_ms()
        backlog = 0
        deadline = time.monotonic() + TIMER_SLICE_S
        for partition, task in self._timer_order():
            if now >= task.next_due and (until := self._timer_horizon(partition, now)) >= task.next_due:
                self.txn.begin()
                try:
                    fired = task.fire_due(until, skip=self._poison_timers, dead=self._dead_letter_timer,
                                          deadline=deadline)  # fmt: skip
                except TimerFailed as failed:
                    if self.options.error_policy == "fail":
                        raise failed.error from failed
                    self._poison_timers[failed.timer.id] = failed.error
                    log.warning("timer handler raised; rewinding to dead-letter the timer",
                                extra={"timer": failed.timer.id, "error": repr(failed.error)})  # fmt: skip
                    self.txn.rewind_after_handler()
                    return
                if fired:
                    self.pending.add(m.TIMERS_FIRED, (self.processor.name,), fired)
                self.txn.records += fired
                backlog += task.due_count(until)
        m.TIMER_BACKLOG.labels(self.processor.name).set(backlog)

    def _timer_order(self) -> list[tuple[int, PartitionTask]]:
        """The tasks, starting one further each turn: a partition with a large due backlog
        uses up the turn's timer slice only when its turn comes first."""
        tasks = list(self.tasks.items())
        self._timer_turn += 1
        first = self._timer_turn % len(tasks)
        return tasks[first:] + tasks[:first]

    def _timer_horizon(self, partition: int, now: int) -> int:
        """How far the timers of `partition` may fire: `now`, unless an input partition still
        has records waiting (position < end); then only up to the timestamp of the last record
        processed from it (none yet: no timer). Records wait in timestamp order, so each one
        produced before a timer's due time is processed before the timer fires."""
        horizon = now
        for physical in self._input_topics:
            if self._lagging(TopicPartition(physical, partition)):
                horizon = min(horizon, self._stream_ts.get((physical, partition), -1))
        return horizon

    def _lagging(self, tp: TopicPartition) -> bool:
        """Records wait in `tp`: the position is before the cached end (the last stable offset,
        read_committed), or either is not known yet (nothing fetched since the seek)."""
        try:
            position = self.consumer.position([tp])[0].offset
            low, high = self.consumer.get_watermark_offsets(tp, cached=True)
        except KafkaException:
            return True
        if position < 0:  # nothing consumed since the seek: the position is where it sought
            position = self._sought.get((tp.topic, tp.partition), -1)
            position = low if position == OFFSET_BEGINNING else position
        return high < 0 or position < 0 or position < high

    def _check_config(self) -> None:
        program = self.program_table.current()
        if program.version == self.config_version or not self.tasks:
            return
        if self.config_version >= 0:  # a new version while running: let tasks react
            self.txn.begin()
            for task in self.tasks.values():
                task.on_config(program)
        self.config_version = program.version
