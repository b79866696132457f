"""The exactly-once Kafka -> PostgreSQL sink loop.

PostgreSQL, not Kafka, owns the consumer position: every batch of rows and the next offset
of each partition it covers commit in one transaction (table sink_offsets), and on
assignment (or after any database error) the consumer seeks to the stored offsets. So a
crash or outage at any moment neither loses nor duplicates a row. Kafka offsets are never
committed.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from plumbing.kafka_util import check_consumer_error
from plumbing.observability import LagReport
from schemas import topics as t
from schemas.codec import CodecError, default_codec
from schemas.settings import Settings, libpq_url
from schemas.topics import base_name, schema_for, topic_name
from sinks import metrics as m
from sinks.align import Aligner, AlignOptions, Key
from sinks.batch import Batch
from sinks.dlq_relay import DlqRelay
from sinks.leaderboards import ScoringPrograms
from sinks.mapping import SOURCE_TOPICS, Source
from sinks.pipeline import BatchWriter
from sinks.rejects import Reject
from sinks.writer import Fenced, Offsets, Reconnecting, Written, load_offsets, prepare

log = logging.getLogger("sinks.sink")
YIELD_EVERY = 32  # records decoded between hand-overs to the writer (about 0.5 ms)


@dataclass(frozen=True)
class SinkOptions:
    batch_size: int = 5000
    linger_ms: int = 200
    group_id: str | None = None  # default f"{TOPIC_PREFIX}sink"
    instance_id: str | None = None  # static membership: a restart takes over at once
    session_timeout_ms: int = 10000
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    connect_timeout_s: int = 3
    dlq_relay: bool = True  # publish sink_rejects to sink.dlq (sinks/dlq_relay.py)
    tune_gc: bool = True  # see tune_gc()
    align: AlignOptions = AlignOptions()  # events with their results in a backlog (sinks/align.py)


def tune_gc() -> None:
    """Fewer and cheaper cyclic GC passes for the process that runs the sink.

    A batch is hundreds of thousands of short-lived containers (decoded records, their rows),
    freed by reference counting, not by the collector; with the default thresholds the older
    generations were still re-scanned several times per batch, together with everything
    loaded at start-up: about a quarter of the decode-and-map CPU. Start-up objects are
    frozen out of the scans (after one collection, so no garbage is frozen) and the older
    generations are collected 5 times less often; cyclic garbage is still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 50, 50)


class Sink:
    """Consumes every sink topic and commits rows + offsets to PostgreSQL in one transaction."""

    def __init__(self, settings: Settings, options: SinkOptions | None = None) -> None:
        self.settings = settings
        self.options = options or SinkOptions()
        self.topics = [topic_name(t, settings) for t in SOURCE_TOPICS]
        self._codec = default_codec()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db = Reconnecting(self._connect)
        self._consumer: Consumer | None = None
        self._assigned: set[tuple[str, int]] = set()
        self._committed: Offsets = {}  # confirmed stored in PostgreSQL
        self._position: Offsets = {}  # stored once every submitted batch commits
        self._writer: BatchWriter | None = None
        self._batch = Batch()
        self._resync = False
        self._backoff = self.options.backoff_initial_s
        self.last_loop = time.monotonic()
        self._lag_at = 0.0
        self._lag = LagReport("sink")
        self._base_names: dict[str, str] = {}  # physical topic -> logical (per record)
        pair = {topic_name(t.EVENTS_LOYALTY, settings): topic_name(t.LOYALTY_RESULTS, settings)}
        self._aligner = Aligner(pair, self.options.align) if self.options.align.enabled else None
        self.db_ok = False
        self.committed_records = 0
        self.merged_events = 0  # events rows inserted with their result (sinks/align.py)
        self._programs = ScoringPrograms(settings)  # leaderboards score results with it
        self.relay = DlqRelay(settings, self._connect, self.topics) if self.options.dlq_relay else None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Sink:
        self._thread = threading.Thread(target=self.run, name="sink", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the loop to finish its batch and leave (safe from a signal handler)."""
        self._stop.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Consume until stop(): flushes the last batch and leaves the group cleanly."""
        if self.options.tune_gc:
            tune_gc()
        self._programs.start()
        if self.relay is not None:
            self.relay.start()
        self._consumer = Consumer(self._consumer_config())
        self._writer = BatchWriter(self._connect, self._record)
        self._consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info("sink started", extra={"topics": self.topics})
        try:
            while not self._stop.is_set():
                self.last_loop = time.monotonic()
                if self._writer.failed:
                    self._write_failed()
                elif self._resync:
                    self._try_resync()
                else:
                    self._poll_once()
            self._flush_and_drain()
        finally:
            self._consumer.close()
            self._writer.close()
            self._db.close()
            if self.relay is not None:
                self.relay.stop()
            self._programs.stop()
            log.info("sink stopped")

    @property
    def released_by_time(self) -> int | None:
        """Records the aligner (sinks/align.py) released because they had waited long enough,
        not because their partner caught up; None when the sink does not align."""
        return None if self._aligner is None else self._aligner.expired

    def health(self) -> dict:
        alive = time.monotonic() - self.last_loop < 30
        return {
            "status": "ok" if alive else "stuck",
            "db": "up" if self.db_ok else "down",
            "assigned": len(self._assigned),
            "committed_records": self.committed_records,
            "dlq_relay": self.relay.state if self.relay is not None else "off",
        }

    def _consumer_config(self) -> dict:
        o = self.options
        cfg = {
            "bootstrap.servers": self.settings.kafka_bootstrap_servers,
            "group.id": o.group_id or f"{self.settings.topic_prefix}sink",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": o.session_timeout_ms,
            "enable.partition.eof": False,
        }
        if o.instance_id:
            cfg["group.instance.id"] = o.instance_id
        return cfg

    # -- database --------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(
            libpq_url(self.settings.database_url),
            autocommit=True,
            connect_timeout=self.options.connect_timeout_s,
        )

    def _read_offsets(self) -> Offsets:
        offsets = load_offsets(self._db.get(), self.topics)
        self.db_ok = True
        m.DB_UP.set(1)
        return offsets

    # -- rebalance -------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start each partition at the offset stored in PostgreSQL (not Kafka's)."""
        self._assigned |= {(p.topic, p.partition) for p in partitions}
        try:
            stored = self._read_offsets()
        except psycopg.Error as exc:
            self._db_failed("reading offsets on assignment", exc)
            consumer.assign(partitions)
            consumer.pause(partitions)
            self._batch = Batch()
            self._resync = True  # seek once PostgreSQL answers
            return
        self._seed(stored, partitions)
        consumer.assign(partitions)
        if self._aligner is not None:
            consumer.resume(partitions)  # a pause of the aligner's before a revoke must not stay
        log.info("assigned", extra={"partitions": len(partitions)})

    def _seed(self, stored: Offsets, partitions: list[TopicPartition]) -> None:
        if self._aligner is not None:
            self._aligner.forget((p.topic, p.partition) for p in partitions)
        for p in partitions:
            tp = (p.topic, p.partition)
            p.offset = stored.get(tp, OFFSET_BEGINNING)
            for offsets in (self._committed, self._position):
                if tp in stored:
                    offsets[tp] = stored[tp]
                else:
                    offsets.pop(tp, None)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._flush_and_drain()
        self._drop(partitions)

    def _flush_and_drain(self) -> None:
        """Write what we hold and wait for it, e.g. before giving partitions away."""
        if self._batch and not self._resync:
            self._flush()
        error = self._writer.drain()
        if error is not None:
            self._writer.error = error
            self._write_failed()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._batch = Batch()  # someone else may own them now: their rows are not ours to write
        self._drop(partitions)

    def _drop(self, partitions: list[TopicPartition]) -> None:
        if self._aligner is not None:
            self._aligner.forget((p.topic, p.partition) for p in partitions)
        for p in partitions:
            self._assigned.discard((p.topic, p.partition))
            self._committed.pop((p.topic, p.partition), None)
            self._position.pop((p.topic, p.partition), None)
        self._batch = Batch()

    # -- main loop -------------------------------------------------------------------------
    def _poll_once(self) -> None:
        o = self.options
        if self._batch:
            wait = max(0.0, o.linger_ms / 1000 - (time.monotonic() - self._batch.started))
        else:
            wait = 0.5
        room = max(1, min(10000, o.batch_size - len(self._batch)))
        al = self._aligner
        if al is None:
            self._add_all(self._consumer.consume(num_messages=room, timeout=wait))
        else:
            self._poll_aligned(al, room, wait)
        self._update_lag()
        batch = self._batch
        linger_over = batch and time.monotonic() - batch.started >= o.linger_ms / 1000
        if batch and (len(batch) >= o.batch_size or linger_over):
            self._flush()
            if al is not None:
                al.busy()

    def _poll_aligned(self, al: Aligner, room: int, wait: float) -> None:
        """Consume through the aligner: records of events.loyalty and loyalty.results are held
        while ahead in time of their co-partition's (sinks/align.py)."""
        want = room - al.ready()
        if want > 0:
            deadline = al.next_deadline()
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            if al.ready():
                wait = 0.0
            al.offer(self._consumer.consume(num_messages=want, timeout=wait), time.monotonic())
        al.release(time.monotonic(), self._lag_of)
        pause, resume = al.pauses()
        if pause:
            self._consumer.pause([TopicPartition(tp, p) for tp, p in pause])
        if resume and not self._resync:
            self._consumer.resume([TopicPartition(tp, p) for tp, p in resume])
        self._add_all(al.take(room))

    def _lag_of(self, key: Key, next_offset: int | None) -> int | None:
        """Records the partition still has to deliver, from the cached high watermark; none
        if another instance owns it (nothing of it will come here to wait for)."""
        if key not in self._assigned:
            return 0
        try:
            low, high = self._consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
        except Exception:  # noqa: BLE001 - unknown: the aligner waits at most max_wait_ms
            return None
        if high is None or high < 0:
            return None
        start = next_offset if next_offset is not None else self._position.get(key, low)
        return None if start is None or start < 0 else high - start

    def _add_all(self, msgs: list[Message]) -> None:
        """Decode and map `msgs` into the batch, handing the interpreter lock to the writer
        thread every YIELD_EVERY records while it writes a batch.

        The writer is the critical path: after each PostgreSQL answer it needs the lock for
        about a millisecond of its own work, and a waiting thread gets it from a busy one only
        after the switch interval (5 ms). A batch is about 25 round trips, so without the
        hand-over it waited some 0.1 s per batch for this loop, about a third of its time
        (bench/sink.py)."""
        busy = self._writer.busy
        for i, msg in enumerate(msgs, 1):
            self._add(msg)
            if i % YIELD_EVERY == 0 and busy():
                time.sleep(0)  # releases the lock: a writer waiting for it takes it now

    def _add(self, msg: Message) -> None:
        if msg.error():
            check_consumer_error(msg.error())  # ConsumerFailed ends the sink for a restart
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("consume error", extra={"error": str(msg.error())})
            return
        physical = msg.topic()
        if (physical, msg.partition()) not in self._assigned or self._resync:
            return
        if not self._batch:
            self._batch.started = time.monotonic()
        base = self._base_names.get(physical)
        if base is None:
            base = self._base_names[physical] = base_name(physical, self.settings)
        src = Source(base, msg.partition(), msg.offset(), msg.timestamp()[1], (msg.key(), msg.value()))
        try:
            value = self._codec.decode(msg.value(), schema_for(base))
        except (CodecError, ValueError, EOFError, TypeError, IndexError) as exc:
            reject = Reject.undecodable(physical, src, msg.key(), msg.value(), exc)
            self._batch.add_undecodable(src, physical, reject)
            self._quarantined(reject)
            return
        before = len(self._batch.rejects)
        self._batch.add(value, src, physical, self._programs.for_record(base, value))
        if len(self._batch.rejects) > before:
            self._quarantined(self._batch.rejects[-1])

    def _quarantined(self, reject: Reject) -> None:
        """Logged at once; counted (sink_rejects_total) when its batch commits."""
        log.error(
            "record quarantined in sink_rejects",
            extra={"topic": reject.topic, "partition": reject.partition,
                   "offset": reject.offset, "error": reject.error},
        )  # fmt: skip

    def _flush(self) -> None:
        """Hand the batch to the writer thread, fenced on the offsets it must start from."""
        batch, self._batch = self._batch, Batch()
        batch.config_version = self._programs.version
        conn = self._db.open()
        if conn is not None:  # else the writer encodes: connecting here would block reading
            prepare(conn, batch)
        expected = {tp: self._position.get(tp) for tp in batch.offsets}
        self._position.update(batch.offsets)
        self._writer.submit(batch, expected)

    def _write_failed(self) -> None:
        error = self._writer.drain() or self._writer.error
        if isinstance(error, Fenced):
            m.FENCED.inc()
            log.warning("offsets moved under us; re-reading", extra={"error": str(error)})
        else:
            self._db_failed("writing batch", error)
        self._enter_resync()

    def _record(self, batch: Batch, written: Written, seconds: float) -> None:
        """Called by the writer thread once a batch has committed."""
        self._committed.update(batch.offsets)
        self.db_ok = True
        self._backoff = self.options.backoff_initial_s
        self.committed_records += len(batch)
        self.merged_events += written.merged
        m.MERGED.inc(written.merged)
        m.DB_UP.set(1)
        m.BATCHES.inc()
        m.BATCH_SECONDS.observe(seconds)
        m.BATCH_RECORDS.observe(len(batch))
        for table, n in written.rows.items():
            m.ROWS.labels(table).inc(n)
        for reject in written.rejects:
            m.REJECTS.labels(reject.table or "none").inc()
            if reject.table:
                log.error(
                    "row refused by PostgreSQL, quarantined in sink_rejects",
                    extra={"topic": reject.topic, "partition": reject.partition,
                           "offset": reject.offset, "table": reject.table, "error": reject.error},
                )  # fmt: skip
        for topic, n in batch.per_topic.items():
            m.RECORDS.labels(topic).inc(n)
        if written.rejects and self.relay is not None:
            self.relay.wake()  # to sink.dlq now, not at the next poll

    def _update_lag(self) -> None:
        """Main thread only: the consumer must not be called from the writer thread."""
        if time.monotonic() - self._lag_at < 1.0:
            return
        self._lag_at = time.monotonic()
        lags: dict[tuple[str, int], int] = {}
        for topic, part in list(self._assigned):
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, part), cached=True)
            except Exception:  # noqa: BLE001 - lag is best effort
                continue
            if high is not None and high >= 0:
                lags[(base_name(topic, self.settings), part)] = high - self._committed.get((topic, part), 0)
        self._lag.update(lags)  # from PostgreSQL's offsets: what is not yet in the tables

    # -- recovery --------------------------------------------------------------------------
    def _db_failed(self, what: str, exc: Exception) -> None:
        self.db_ok = False
        m.DB_UP.set(0)
        m.DB_ERRORS.inc()
        log.warning(f"database error {what}; backing off", extra={"error": repr(exc)})
        self._db.close()

    def _enter_resync(self) -> None:
        """Forget everything in flight; resume from PostgreSQL's offsets once it answers."""
        self._batch = Batch()
        if self._aligner is not None:
            self._aligner.forget()
        self._resync = True
        parts = [TopicPartition(t, p) for t, p in self._assigned]
        if parts:
            self._consumer.pause(parts)

    def _try_resync(self) -> None:
        try:
            stored = self._read_offsets()
        except psycopg.Error as exc:
            self._db_failed("re-reading offsets", exc)
            self._consumer.poll(self._backoff)  # serve the group while waiting
            self._backoff = min(self.options.backoff_max_s, self._backoff * 2)
            return
        parts = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        self._seed(stored, parts)
        self._consumer.assign(parts)
        self._consumer.resume(parts)
        self._batch = Batch()
        self._resync = False
        self._backoff = self.options.backoff_initial_s
        log.info("resumed from stored offsets", extra={"partitions": len(parts)})
