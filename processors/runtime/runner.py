"""The processing loop: consume -> process -> produce, exactly once, with Kafka transactions.

One transactional producer per process (`transactional.id` = group + instance id, stable across
restarts so a restarted instance fences its zombie and aborts its open transaction at once).
Every ~100 ms or N records (up to 1 s while catching up on a backlog) the loop sends the
consumed offsets with the consumer group metadata and commits; only then do store writes reach
RocksDB. On a failed commit the transaction is aborted (or, when the producer hit a fatal
error, the producer replaced: transactions.py), the stores' overlays dropped and the consumer
rewound to the committed offsets. A watchdog exits when nothing commits for `stall_timeout_s`.

Assignment is eager with the `range` assignor: co-partitioned input topics give partition N of
every input to the same instance, which owns the task (stores, timers) for N. Assigned
partitions start paused: the loop restores their stores from the changelogs (a slice at a time,
so /healthz stays live while /readyz says "restoring"), then creates the task, seeks to the
committed offsets and resumes, so no record is processed before its partition's state is whole.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from plumbing import observability as m
from plumbing.config_table import ProgramTable
from plumbing.kafka_util import check_consumer_error, partitions_of
from processors.runtime.api import Processor, Record
from processors.runtime.changelog import Restorer, changelog_topic, ensure_changelogs
from processors.runtime.clock import Clock, SystemClock
from processors.runtime.dead_letters import (
    DECODE_ERRORS,
    POLICIES,
    DeadLetter,
    Tombstone,
    dlq_topic,
    ensure_dlq_topic,
    timer_value,
)
from processors.runtime.limits import DEFAULT_LIMIT, RecordTooLarge, record_limit, too_large
from processors.runtime.partitioner import partition_for
from processors.runtime.pending import PendingMetrics
from processors.runtime.task import TIMERS_STORE, PartitionTask, TimerFailed
from processors.runtime.transactions import (
    MAX_RENEWALS,
    TransactionBroken,
    error_of,
    left,
    retrying,
    timed_out,
)
from schemas.codec import default_codec
from schemas.settings import Settings
from schemas.topics import base_name, schema_for, topic_name

log = logging.getLogger(__name__)

RESTORE_SLICE_S = 0.2  # restore this long per loop turn, then poll, punctuate and commit


@dataclass
class RuntimeOptions:
    state_dir: Path = Path(".local/state")
    instance_id: str = field(default_factory=socket.gethostname)
    clock: Clock = field(default_factory=SystemClock)
    metrics_port: int | None = None  # None: no HTTP server; 0: any free port
    commit_interval_ms: int = 100
    commit_every: int = 10_000
    # While polls come back full (a backlog), a transaction may run this long instead: fewer
    # commits (each blocks the loop on broker round trips), so the backlog drains faster.
    catch_up_interval_ms: int = 1000
    static_membership: bool = False  # group.instance.id = instance_id: no rebalance on restart
    transaction_timeout_ms: int = 10_000
    # the whole revoke path (committing the open transaction, or aborting it) gets this long
    revoke_timeout_s: float = 10.0
    session_timeout_ms: int = 6_000
    poll_batch: int = 500
    consumer_config: dict[str, Any] = field(default_factory=dict)
    producer_config: dict[str, Any] = field(default_factory=dict)
    # "dlq": a record that cannot be decoded or whose handler raises goes to <processor>.dlq
    # and processing goes on; "fail": the processor stops (see dead_letters.py)
    error_policy: str = "dlq"
    # the largest record produced (bytes); None: the smallest max.message.bytes of the topics
    # written, read at start (limits.py); producer_config["message.max.bytes"] caps it too
    max_record_bytes: int | None = None
    # the watchdog: records pending and no commit for this long -> exit 1 (/healthz 503 from
    # half of it), for the supervisor to restart a process that cannot make progress
    stall_timeout_s: float = 120.0


def commit_due(opts: RuntimeOptions, records: int, elapsed_ms: float, catching_up: bool) -> bool:
    """Commit after `commit_every` records or the commit interval; the longer catch-up interval
    while polls come back full (a backlog: latency is set by the backlog then, not the commit)."""
    interval = opts.catch_up_interval_ms if catching_up else opts.commit_interval_ms
    return records >= opts.commit_every or elapsed_ms >= interval


class FatalError(RuntimeError):
    """This instance cannot make progress (a fatal consumer error, no commit within
    `stall_timeout_s`, a producer renewed again and again): it must stop."""


class PartitionMismatch(RuntimeError):
    """Co-partitioned topics disagree on their partition count: the processor must not start."""


def check_copartitioned(settings: Settings, topics: list[str]) -> None:
    """Refuse to start unless every input (and changelog) has `settings.partitions` partitions:
    task N owns partition N of each, so a key would otherwise meet another key's state."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "check"})
    try:
        counts = {topic: len(partitions_of(consumer, topic)) for topic in topics}
    finally:
        consumer.close()
    wrong = {t: n for t, n in counts.items() if n != settings.partitions}
    if wrong:
        found = ", ".join(f"{t} has {n}" for t, n in counts.items())
        raise PartitionMismatch(
            f"co-partitioned topics must all have TOPIC_PARTITIONS={settings.partitions} partitions: "
            f"{found}; recreate the topics (or set TOPIC_PARTITIONS) so that they agree"
        )


class Runner:
    """Runs one Processor; `run()` blocks, `start()` runs it in a thread, `stop()` ends it."""

    def __init__(self, processor: Processor, settings: Settings, options: RuntimeOptions | None = None):
        self.processor = processor
        self.settings = settings
        self.options = options or RuntimeOptions()
        self.group = topic_name(processor.name, settings)
        self.codec = default_codec()
        self.tasks: dict[int, PartitionTask] = {}
        self.positions: dict[tuple[str, int], int] = {}
        self.in_txn = False
        self.txn_records = 0
        self.txn_started = 0.0
        self.config_version = -1
        self.changelog_offsets: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_loop = time.monotonic()
        self._lag_updated = 0.0
        self.ready = threading.Event()
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
        self.restorer: Restorer | None = None
        # partition -> its input partitions, assigned but paused until its stores are restored
        self._held: dict[int, list[TopicPartition]] = {}
        self._restore_remaining = 0
        self._restore_started = 0.0
        self.max_record_bytes = DEFAULT_LIMIT
        self._last_commit = time.monotonic()  # or the last moment nothing was pending
        self._failing = False  # a transaction failed since the last commit
        self._renewals = 0  # producers replaced since the last commit
        # since when the consumer has had no assignment (it subscribed, or a rebalance revoked
        # or lost its partitions); None once the group assigned it (an empty list counts)
        self._unassigned_since: float | None = time.monotonic()
        # timers wait for the backlog: per input (topic, partition), the timestamp of the last
        # record processed, and the offset the consumer was last sought to
        self._stream_ts: dict[tuple[str, int], int] = {}
        self._partition_cache: dict[bytes, int] = {}  # key -> murmur2 partition
        self._sought: dict[tuple[str, int], int] = {}

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

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: finish the current transaction, close stores, leave the group."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())

    def healthy(self) -> bool:
        """Liveness: the loop turns (it does while restoring too), nothing failed, and it
        commits what it processes (not stalled for half the watchdog's limit)."""
        now = time.monotonic()
        half = self.options.stall_timeout_s / 2
        stalled = self._pending() and now - self._last_commit > half or self._unassigned_for() > half
        return self.error is None and now - self._last_loop < 30 and not stalled

    def last_turn(self) -> float:
        """When the loop last turned (monotonic): the hard watchdog (watchdog.py) reads it."""
        return self._last_loop

    def stopping(self) -> bool:
        return self._stop.is_set()

    def _pending(self) -> bool:
        return self.in_txn or self._failing

    def _unassigned_for(self) -> float:
        """Seconds the consumer has waited for the group to assign it (0 when assigned)."""
        return 0.0 if self._unassigned_since is None else time.monotonic() - self._unassigned_since

    def readiness(self) -> dict[str, Any]:
        """Readiness (/readyz): healthy, and every assigned partition restored and resumed."""
        if not self.healthy():
            return {"status": "unhealthy"}
        if self._held:
            return {"status": "restoring", "partitions": sorted(self._held),
                    "remaining_records": self._restore_remaining}  # fmt: skip
        if not self.ready.is_set():
            return {"status": "starting"}
        return {"status": "ok", "partitions": len(self.tasks)}

    def run(self) -> None:
        ensure_changelogs(self.settings, self.group, self._store_names())
        changelogs = [changelog_topic(self.group, s) for s in self._store_names()]
        check_copartitioned(self.settings, [*(self._topics[t] for t in self.processor.inputs), *changelogs])
        if self.options.error_policy == "dlq":
            ensure_dlq_topic(self.settings, self.dlq)
        self.max_record_bytes = self._record_limit(changelogs)
        self.program_table.start()
        if self.options.metrics_port is not None:
            port = self.options.metrics_port
            self.health = m.HealthServer(port, self.healthy, ready=self.readiness).start()
            log.info("health and metrics served", extra={"port": self.health.port})
        self.producer = self._producer()
        retrying(self.producer.init_transactions, time.monotonic() + 30, what="init_transactions")
        self.restorer = Restorer(self.settings, self.group, self.processor.name)
        self.consumer = self._consumer()
        self.consumer.subscribe(
            [self._topics[t] for t in self.processor.inputs],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "processor started",
            extra={"processor": self.group, "instance": self.options.instance_id},
        )
        self._last_commit = self._unassigned_since = time.monotonic()
        try:
            self._loop()
            self._commit()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        """Abort an unfinished transaction (after a failure), leave the group, close stores."""
        try:
            if self.in_txn:
                self.in_txn = False
                for task in self.tasks.values():
                    task.abort()
                self.producer.abort_transaction(10)
        except (KafkaException, TransactionBroken):
            log.warning("abort on shutdown failed; the broker will time the transaction out")
        finally:
            try:
                self.consumer.close()
            except Exception as exc:  # noqa: BLE001 (KafkaError is raised bare): leave anyway
                log.warning("consumer close failed", extra={"error": str(exc)})
            finally:
                for task in self.tasks.values():
                    task.close()
                self.tasks.clear()
                if self.restorer:
                    self.restorer.close()
                self.program_table.stop()
                if self.health:
                    self.health.stop()
        log.info("processor stopped", extra={"processor": self.group})

    def _record_limit(self, changelogs: list[str]) -> int:
        """message.max.bytes at or below every written topic's limit (see limits.py)."""
        written = [*(self._topics[t] for t in self.processor.outputs), *changelogs]
        if self.options.error_policy == "dlq":
            written.append(self.dlq)
        configured = self.options.max_record_bytes or self.options.producer_config.get("message.max.bytes")
        limit = record_limit(self.settings, written, int(configured) if configured else None)
        log.info("record size limit", extra={"max_record_bytes": limit})
        return limit

    # -- Kafka clients ----------------------------------------------------------------------
    def _producer(self) -> Producer:
        return Producer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "transactional.id": f"{self.group}-{self.options.instance_id}",
                "transaction.timeout.ms": self.options.transaction_timeout_ms,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 50,  # records are visible only at commit, and commit flushes at once
                "partitioner": "murmur2_random",
                "queue.buffering.max.messages": 500_000,
                **self.options.producer_config,
                "message.max.bytes": self.max_record_bytes,  # oversize fails in produce()
            }
        )

    def _consumer(self) -> Consumer:
        cfg = {
            "bootstrap.servers": self.settings.kafka_bootstrap_servers,
            "group.id": self.group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
            "session.timeout.ms": self.options.session_timeout_ms,
            "heartbeat.interval.ms": max(500, self.options.session_timeout_ms // 6),
            "max.poll.interval.ms": 300_000,
            "fetch.wait.max.ms": 50,
            # librdkafka (2.16) joins only after a metadata response for the subscription; one
            # lost to a broker SIGKILL is not asked again before the next periodic refresh
            # (300 s by default), and the consumer waits out of its group until then
            "topic.metadata.refresh.interval.ms": 10_000,
            **self.options.consumer_config,
        }
        if self.options.static_membership:
            cfg["group.instance.id"] = f"{self.group}-{self.options.instance_id}"
        return Consumer(cfg)

    def _store_names(self) -> list[str]:
        return [*self.processor.stores, TIMERS_STORE]

    # -- the loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._turn()
            except TransactionBroken as broken:  # from produce() or begin_transaction()
                self._recover(broken.error, self._stall_deadline())

    def _turn(self) -> None:
        """One turn: restore a slice, poll, process, fire timers, commit when due."""
        opts = self.options
        self._last_loop = time.monotonic()
        self._watchdog()
        if self._held:
            self._restore_step()
        wait = 0 if self._held else 0.005 if self.in_txn else 0.02
        msgs = self.consumer.consume(opts.poll_batch, wait)
        if not msgs and not self.in_txn:  # nothing pending: a quiet loop is not a stalled one
            self._failing = False
            self._last_commit = time.monotonic()
            self._update_lag()  # an idle processor's lag (0, or partitions it lost) stays fresh
        for msg in msgs:
            if msg.error():
                check_consumer_error(msg.error())  # ConsumerFailed: the process must restart
                continue
            if not self._process(msg):
                break  # rewound: the rest of this poll is read again
        self._punctuate()
        self._check_config()
        elapsed_ms = (time.monotonic() - self.txn_started) * 1000
        if self.in_txn and commit_due(opts, self.txn_records, elapsed_ms, len(msgs) >= opts.poll_batch):
            self._commit()

    def _watchdog(self) -> None:
        """Exit (FatalError -> exit 1) when records are pending and nothing committed for
        `stall_timeout_s`: a supervisor restart beats a live process that does nothing."""
        stalled = time.monotonic() - self._last_commit
        if self._pending() and stalled > self.options.stall_timeout_s:
            raise FatalError(f"no transaction committed for {stalled:.0f}s with records pending")
        if (unassigned := self._unassigned_for()) > self.options.stall_timeout_s:
            # a join that never completes (seen when a broker SIGKILL landed during the join:
            # librdkafka never joined again, no error, the group empty, for good)
            raise FatalError(f"no partitions assigned for {unassigned:.0f}s: not in the consumer group")

    def _stall_deadline(self) -> float:
        """When the watchdog gives up: the deadline of every recovery call."""
        return max(self._last_commit + self.options.stall_timeout_s, time.monotonic() + 1)

    def _begin(self) -> None:
        if not self.in_txn:
            try:
                self.producer.begin_transaction()
            except KafkaException as exc:
                raise TransactionBroken(error_of(exc)) from exc
            self.in_txn = True
            self.txn_records = 0
            self.txn_started = time.monotonic()
            self.pending.discard()  # counted by a transaction that did not commit

    def _process(self, msg: Any) -> bool:
        """Process one message in the open transaction; False when the handler raised and the
        transaction was rewound (the record is dead-lettered when the loop reaches it again)."""
        partition = msg.partition()
        task = self.tasks.get(partition)
        if task is None:  # not ours any more (revoked mid-batch)
            return True
        self._begin()
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
            self._rewind_transaction()
            return False
        self._latency.observe(time.perf_counter() - started)
        self._count(m.RECORDS_IN, topic)
        self._advance(physical, partition, offset)
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
        self._produce(msg.topic(), msg.key(), msg.value(), partition=right, headers=msg.headers())
        self._advance(msg.topic(), msg.partition(), msg.offset())
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

    def _advance(self, physical: str, partition: int, offset: int) -> None:
        self.positions[(physical, partition)] = offset + 1
        self.txn_records += 1

    def _dead_letter(self, msg: Any, reason: str, error: BaseException) -> None:
        """Move past `msg` in this transaction, its original bytes on the dead-letter topic."""
        if self.options.error_policy == "fail":
            raise error
        letter = DeadLetter(reason, error, self.processor.name, msg.topic(), msg.partition(),
                            msg.offset(), self.config_version)  # fmt: skip
        try:
            self._produce(self.dlq, msg.key(), msg.value(), headers=letter.headers())
        except RecordTooLarge:  # the letter's headers pushed it over: keep the why, not the bytes
            dropped = [*letter.headers(), ("dlq.value.dropped", b"too large")]
            self._produce(self.dlq, msg.key(), None, headers=dropped)
        self._advance(msg.topic(), msg.partition(), msg.offset())
        self.pending.add(m.DEAD_LETTERS, (self.processor.name, reason))
        letter.log()

    def _dead_letter_timer(self, timer: Any, error: BaseException) -> None:
        letter = DeadLetter("timer", error, self.processor.name, "", -1, -1, self.config_version)
        self._produce(self.dlq, timer.key.encode(), timer_value(timer), headers=letter.headers())
        self.pending.add(m.DEAD_LETTERS, (self.processor.name, "timer"))
        letter.log()

    def _rewind_transaction(self) -> None:
        """Abort the open transaction (a handler raised) and seek back to the last commit."""
        deadline = self._stall_deadline()
        self._end_transaction(deadline)
        m.ABORTS.labels(self.processor.name).inc()
        self._rewind(deadline)

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
        self._produce(self._topics[topic], key.encode(), data)
        self._count(m.RECORDS_OUT, topic)

    def _produce(self, topic: str, key: bytes, value: bytes | None, **kwargs: Any) -> None:
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

    def _punctuate(self) -> None:
        if not self.tasks:
            return
        now = self.options.clock.now_ms()
        backlog = 0
        for partition, task in list(self.tasks.items()):
            if now >= task.next_due and (until := self._timer_horizon(partition, now)) >= task.next_due:
                self._begin()
                try:
                    fired = task.fire_due(until, skip=self._poison_timers, dead=self._dead_letter_timer)
                except TimerFailed as failed:
                    if self.options.error_policy == "fail":
                        raise failed.error from failed
                    self._poison_timers[failed.timer.id] = failed.error
                    log.warning("timer handler raised; rewinding to dead-letter the timer",
                                extra={"timer": failed.timer.id, "error": repr(failed.error)})  # fmt: skip
                    self._rewind_transaction()
                    return
                if fired:
                    self.pending.add(m.TIMERS_FIRED, (self.processor.name,), fired)
                self.txn_records += fired
                backlog += task.due_count(until)
        m.TIMER_BACKLOG.labels(self.processor.name).set(backlog)

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
            self._begin()
            for task in self.tasks.values():
                task.on_config(program)
        self.config_version = program.version

    # -- transactions -----------------------------------------------------------------------
    def _commit(self, budget: float = 60.0) -> None:
        """Commit the open transaction; every broker call shares one `budget` (seconds).

        Retriable errors retry the call, others end the transaction and rewind (_recover). A
        commit whose outcome is unknown (it timed out, or the producer died in it) is settled
        by the committed offsets once the producer is renewed: init_transactions finishes it."""
        if not self.in_txn:
            return
        started = time.monotonic()
        deadline = started + budget
        try:
            pending = self._produce_changelogs()
            self._flush(deadline)
            self._send_offsets(deadline)
        except (KafkaException, TransactionBroken) as exc:
            self._recover(error_of(exc), deadline)
            return
        try:
            retrying(self.producer.commit_transaction, deadline, what="commit_transaction")
        except KafkaException as exc:
            if not self._committed_anyway(error_of(exc), deadline):
                return
        self._committed(pending, started)

    def _flush(self, deadline: float) -> None:
        if self.producer.flush(left(deadline)) > 0:
            raise timed_out("records of the transaction not delivered in its time budget")

    def _send_offsets(self, deadline: float) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.positions.items()]
        if offsets:
            meta = self.consumer.consumer_group_metadata()
            retrying(lambda timeout: self.producer.send_offsets_to_transaction(offsets, meta, timeout),
                     deadline, what="send_offsets_to_transaction")  # fmt: skip

    def _committed(self, pending: dict[tuple[str, int], int], started: float) -> None:
        """The transaction is committed: its writes reach the stores, the watchdog resets."""
        self.in_txn = False
        for partition, task in self.tasks.items():
            task.commit(
                {s: pending[(s, partition)] for s in self._store_names() if (s, partition) in pending}
            )
        self.positions.clear()
        self._last_commit = time.monotonic()
        self._failing = False
        self._renewals = 0
        m.COMMIT_LATENCY.labels(self.processor.name).observe(time.monotonic() - started)
        self.pending.apply()  # only now: what the committed transaction counted
        self._update_lag()

    def _committed_anyway(self, error: KafkaError, deadline: float) -> bool:
        """commit_transaction failed: end the transaction; True when the broker committed it
        all the same (every input offset of the transaction is the committed one)."""
        positions = dict(self.positions)
        if self._recover(error, deadline, rewind=False) or not positions:
            self._rewind(deadline)  # aborted: it did not commit
            return False
        tps = [TopicPartition(t, p) for t, p in positions]
        committed = {(tp.topic, tp.partition): tp.offset for tp in self._committed_offsets(tps, deadline)}
        if committed == positions:
            log.warning("commit outcome was unknown; the broker has it committed",
                        extra={"error": str(error)})  # fmt: skip
            return True
        self._rewind(deadline)
        return False

    def _produce_changelogs(self) -> dict[tuple[str, int], int]:
        """Write each dirty key's final value once; return the offsets they landed at."""
        self.changelog_offsets = {}
        for partition, task in self.tasks.items():
            for name, store in task.stores.items():
                dirty = store.dirty()
                if not dirty:
                    continue
                topic = changelog_topic(self.group, name)
                last = len(dirty) - 1
                for i, (key, value) in enumerate(dirty.items()):
                    if i == last:
                        self._produce(
                            topic,
                            key,
                            value,
                            partition=partition,
                            on_delivery=self._delivered(name),
                        )
                    else:
                        self._produce(topic, key, value, partition=partition)
        return self.changelog_offsets

    def _delivered(self, store: str) -> Any:
        def callback(err: KafkaError | None, msg: Any) -> None:
            if err is None:
                self.changelog_offsets[(store, msg.partition())] = msg.offset()

        return callback

    def _recover(self, error: KafkaError, deadline: float, rewind: bool = True) -> bool:
        """A transactional call failed: end the transaction (abort, or renew the producer) and
        rewind to the last commit. True when it was aborted (not renewed)."""
        self._failing = True
        m.ABORTS.labels(self.processor.name).inc()
        log.warning("transaction failed; ending it and rewinding",
                    extra={"error": str(error), "fatal": error.fatal(),
                           "abortable": error.txn_requires_abort()})  # fmt: skip
        aborted = self._end_transaction(deadline, error)
        if rewind:
            self._rewind(deadline)
        return aborted

    def _end_transaction(self, deadline: float, error: KafkaError | None = None) -> bool:
        """Abort the open transaction; when that cannot be done (a fatal error, or the abort
        fails) replace the producer instead. True when aborted."""
        was_open = self.in_txn
        usable = error is None or not error.fatal()
        aborted = was_open and usable and self._abort(deadline)
        self.in_txn = False
        if not aborted and (was_open or error is not None):
            self._renew_producer()
        return aborted

    def _abort(self, deadline: float) -> bool:
        try:
            retrying(self.producer.abort_transaction, deadline, floor=5.0, what="abort_transaction")
            return True
        except KafkaException as exc:
            log.warning("abort failed; renewing the producer", extra={"error": str(exc)})
            return False

    def _renew_producer(self) -> None:
        """A new producer with the same transactional.id: init_transactions fences the old
        epoch and completes or aborts its open transaction. Repeated renewals with no commit
        in between (a live twin fencing us back?) stop the process."""
        self._renewals += 1
        if self._renewals > MAX_RENEWALS:
            raise FatalError(f"producer renewed {MAX_RENEWALS} times without a commit")
        log.warning("renewing the transactional producer", extra={"renewal": self._renewals})
        try:
            self.producer.purge(in_queue=True, in_flight=True, blocking=False)
        except (KafkaException, RuntimeError):
            pass
        self.producer = self._producer()
        try:
            retrying(self.producer.init_transactions, self._stall_deadline(), what="init_transactions")
        except KafkaException as exc:
            raise FatalError(f"a new producer could not initialise transactions: {exc}") from exc

    def _rewind(self, deadline: float | None = None) -> None:
        """Drop uncommitted state and seek back to the committed offsets (by `deadline`)."""
        for task in self.tasks.values():
            task.abort()
        self.positions.clear()
        assigned = [tp for tp in self.consumer.assignment() if tp.partition in self.tasks]
        if not assigned:  # partitions still restoring seek when they resume
            return
        for tp in self._committed_offsets(assigned, deadline or self._stall_deadline()):
            self._seek(tp)

    def _seek(self, tp: TopicPartition) -> None:
        """Seek to a committed offset (the beginning when none): the stream time starts over."""
        tp.offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        self._sought[(tp.topic, tp.partition)] = tp.offset
        self._stream_ts.pop((tp.topic, tp.partition), None)
        self.consumer.seek(tp)

    def _committed_offsets(self, tps: list[TopicPartition], deadline: float) -> list[TopicPartition]:
        """The group's committed offsets, retried while the coordinator is away (until the
        watchdog's deadline at least: a rewind that cannot finish must not go on)."""
        deadline = max(deadline, self._stall_deadline())
        try:
            return retrying(lambda timeout: self.consumer.committed(tps, timeout=timeout), deadline,
                            what="committed")  # fmt: skip
        except KafkaException as exc:
            raise FatalError(f"committed offsets unavailable: {exc}") from exc

    def _update_lag(self) -> None:
        """Refresh the lag gauges from cached watermarks, at most every few seconds."""
        now = time.monotonic()
        if now - self._lag_updated < 5:
            return
        self._lag_updated = now
        self._lag.update(m.position_lags(self.consumer, self.settings))

    # -- rebalancing and restore -----------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            self._assign(partitions)
        except BaseException as exc:  # librdkafka swallows callback errors: stop the loop
            log.exception("assignment failed")
            self.error = exc
            self._stop.set()

    def _assign(self, partitions: list[TopicPartition]) -> None:
        """Take the new partitions paused: the loop restores them (no broker call here)."""
        self._unassigned_since = None
        self.consumer.assign(partitions)
        new = [tp for tp in partitions if tp.partition not in self.tasks]
        if new:
            self.consumer.pause(new)
        for tp in new:
            self._held.setdefault(tp.partition, []).append(tp)
        self._restore_started = time.monotonic()
        m.RESTORING.labels(self.processor.name).set(len(self._held))
        log.info("partitions assigned", extra={"partitions": sorted({tp.partition for tp in partitions}),
                                               "restoring": sorted(self._held)})  # fmt: skip
        if not self._held:
            self._ready()

    def _restore_step(self) -> None:
        """Restore for one slice, then start every partition whose stores are complete."""
        assert self.restorer is not None
        new = sorted(self._held.keys() - self.restorer.partitions)
        if new:
            try:
                self.restorer.add({p: self._store_paths(p) for p in new})
            except KafkaException as exc:  # the broker is away: the next turn tries again
                if error_of(exc).fatal():
                    raise
                log.warning("restore waits for the broker", extra={"error": str(error_of(exc))})
        self._start_tasks([p for p in self.restorer.step(RESTORE_SLICE_S) if p in self._held])
        self._restore_remaining = self.restorer.remaining()
        m.RESTORING.labels(self.processor.name).set(len(self._held))
        if not self._held:
            self._ready()

    def _start_tasks(self, partitions: list[int]) -> None:
        """Open the restored partitions' tasks, seek to the committed offsets and resume."""
        if not partitions:
            return
        assert self.restorer is not None
        tps = [tp for p in partitions for tp in self._held[p]]
        committed = self._committed_offsets(tps, self._stall_deadline())
        for partition in partitions:
            self.tasks[partition] = self._task(partition, self.restorer.take(partition))
            del self._held[partition]
        for tp in committed:
            self._seek(tp)
        self.consumer.resume(tps)
        m.ASSIGNED.labels(self.processor.name).set(len(self.tasks))
        self._check_config()  # the version is known before their first record

    def _ready(self) -> None:
        seconds = round(time.monotonic() - self._restore_started, 3)
        log.info("partitions ready", extra={"partitions": sorted(self.tasks), "seconds": seconds})
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what was processed within `revoke_timeout_s` (else abort), then let go."""
        self.ready.clear()
        self._unassigned_since = time.monotonic()  # until the rebalance assigns again
        if self.in_txn:
            self._commit(self.options.revoke_timeout_s)
        self._release({tp.partition for tp in partitions})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.ready.clear()
        self._unassigned_since = time.monotonic()
        if self.in_txn:
            self._end_transaction(time.monotonic() + self.options.revoke_timeout_s)
            for task in self.tasks.values():
                task.abort()
        self._release({tp.partition for tp in partitions})

    def _release(self, partitions: set[int]) -> None:
        """Stop restoring and close the tasks of revoked (or lost) partitions."""
        if self.restorer:
            self.restorer.cancel(partitions)
        for partition in partitions:
            self._held.pop(partition, None)
        m.RESTORING.labels(self.processor.name).set(len(self._held))
        self._close_tasks(partitions)

    def _close_tasks(self, partitions: set[int]) -> None:
        still = {tp.partition for tp in self.consumer.assignment()} - partitions
        for partition in partitions - still:
            task = self.tasks.pop(partition, None)
            if task:
                task.close()
        self.positions = {k: v for k, v in self.positions.items() if k[1] in self.tasks}
        m.ASSIGNED.labels(self.processor.name).set(len(self.tasks))

    # -- tasks --------------------------------------------------------------------------------
    def _store_paths(self, partition: int) -> dict[str, Path]:
        root = Path(self.options.state_dir) / self.group
        return {store: root / store / str(partition) for store in self._store_names()}

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
