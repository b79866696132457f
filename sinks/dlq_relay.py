"""The sink's dead letters on Kafka: `sink_rejects` relayed to `sink.dlq`, exactly once.

The sink stores a record it cannot use in `sink_rejects`, in the transaction of its batch and
offsets (sinks/rejects.py): that is what makes a reject land exactly once in PostgreSQL. The
table is also an outbox: this relay publishes its rows, in `id` order, to `<prefix>sink.dlq`
with the original key and value bytes and the runtime's `dlq.*` headers, so `loyalty dlq list
sink` and `loyalty dlq replay sink` work as for the stream processors.

Exactly once, through a crash at any moment:
- one transactional producer per deployment (transactional.id `<prefix>sink-dlq-relay`);
  `init_transactions` on start and after any error fences an older relay and aborts the
  transaction it left open;
- then the last committed record of `sink.dlq` (one partition, read_committed) says which
  reject id was published last, and only greater ids are published, a batch per transaction;
- writers commit reject ids in order (sinks/rejects.py, ID_ORDER_LOCK), so `id > last` never
  passes over a row committed late;
- among several sink instances, the holder of a PostgreSQL advisory lock relays, the others
  stand by (without it they would fence each other in turn);
- `sink_dlq_relay.last_id`, noted after each commit, is the floor for when retention has
  emptied the topic (a floor only: the topic's tail, when there is one, is exact).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from plumbing.kafka_util import partitions_of, watermarks
from plumbing.observability import DEAD_LETTERS
from processors.runtime.dead_letters import dlq_topic, ensure_dlq_topic, letter_headers, parse_headers
from processors.runtime.transactions import retrying
from schemas.settings import Settings
from schemas.topics import topic_name
from sinks.rejects import split_error

log = logging.getLogger("sinks.dlq_relay")

PROCESSOR = "sink"
PARTITION = 0  # one partition: letters in id order, and its tail is the relay's position
REJECT_ID = "dlq.reject_id"
LEADER_LOCK = 0x53_4E_4B_44  # "SNKD", with the transactional.id's hash as the second key


@dataclass(frozen=True)
class RelayOptions:
    poll_s: float = 1.0  # how often an idle relay (or a standby) looks again
    batch: int = 500  # rejects per Kafka transaction
    timeout_s: float = 30.0  # per transactional call
    retry_s: float = 2.0  # pause after an error


@dataclass(frozen=True, slots=True)
class Letter:
    """One row of sink_rejects, as the relay publishes it."""

    id: int
    topic: str
    partition: int
    offset: int
    table: str
    error: str
    key: bytes | None
    value: bytes | None
    bytes_kept: bool
    config_version: int
    rejected_at: datetime

    @property
    def reason(self) -> str:
        return split_error(self.table, self.error)[0]

    def headers(self) -> list[tuple[str, bytes]]:
        reason, error_class, message = split_error(self.table, self.error)
        extra = {REJECT_ID: str(self.id), "dlq.table": self.table}
        if not self.bytes_kept:
            extra["dlq.value.dropped"] = "original bytes not kept (rejected before migration 0008)"
        return letter_headers(reason=reason, error_class=error_class, message=message,
                              processor=PROCESSOR, topic=self.topic, partition=self.partition,
                              offset=self.offset, config_version=self.config_version,
                              at_ms=int(self.rejected_at.timestamp() * 1000), extra=extra)  # fmt: skip


SELECT = (
    'SELECT id, topic, partition, "offset", "table", error, key, value, bytes_kept, config_version, '
    "rejected_at FROM sink_rejects WHERE id > %s AND topic = ANY(%s) ORDER BY id LIMIT %s"
)
NOTE = (
    "INSERT INTO sink_dlq_relay (relay, last_id) VALUES (%s, %s) ON CONFLICT (relay) DO UPDATE "
    "SET last_id = greatest(sink_dlq_relay.last_id, excluded.last_id), updated_at = now()"
)

BeforeCommit = Callable[[Producer, list[Letter]], None]


class DlqRelay:
    """Publishes the deployment's sink_rejects rows to `sink.dlq` (a thread of the sink)."""

    def __init__(
        self,
        settings: Settings,
        connect: Callable[[], psycopg.Connection],
        source_topics: Sequence[str],
        options: RelayOptions | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        self.settings = settings
        self.options = options or RelayOptions()
        self.topic = topic_name(dlq_topic(PROCESSOR), settings)
        self.transactional_id = f"{settings.topic_prefix}sink-dlq-relay"
        self._connect = connect
        self._sources = list(source_topics)  # physical: only this deployment's rejects
        self._before_commit = before_commit  # tests: crash between produce and commit
        self._conn: psycopg.Connection | None = None  # holds the leader lock
        self.producer: Producer | None = None
        self.last_id: int | None = None  # known once the producer is initialised
        self.state = "standby"  # standby | leader | error
        self.published = 0  # letters this relay committed
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> DlqRelay:
        self._thread = threading.Thread(target=self.run, name="sink-dlq-relay", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """A batch with rejects committed: look now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    busy = self.step()
                except Exception as exc:  # noqa: BLE001 - any failure: start over, fenced and re-read
                    log.warning("dlq relay failed; starting over", extra={"error": repr(exc)})
                    self.state = "error"
                    self._reset()
                    self._stop.wait(self.options.retry_s)
                    continue
                if not busy:
                    self._wake.wait(self.options.poll_s)
                    self._wake.clear()
        finally:
            self._release()

    # -- one step --------------------------------------------------------------------------
    def step(self) -> int:
        """Publish the next rejects in one transaction; the number published (0: none)."""
        conn = self._lead()
        if conn is None:
            return 0
        if self.producer is None:
            if not self._fetch(conn, 0, 1):
                return 0  # nothing ever rejected: no topic, no producer yet
            self._init(conn)
        assert self.last_id is not None
        letters = self._fetch(conn, self.last_id, self.options.batch)
        if letters:
            self._publish(letters)
            conn.execute(NOTE, (self.transactional_id, self.last_id))
        return len(letters)

    def _lead(self) -> psycopg.Connection | None:
        """The connection holding this deployment's relay lock, or None (another relays)."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._reset()
        conn = self._connect()
        got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LEADER_LOCK, self._lock_key())).fetchone()
        if not got or not got[0]:
            conn.close()
            self.state = "standby"
            return None
        self._conn = conn
        self.state = "leader"
        log.info("dlq relay leads", extra={"topic": self.topic})
        return conn

    def _lock_key(self) -> int:
        return zlib.crc32(self.transactional_id.encode()) - 2**31  # an int4

    def _init(self, conn: psycopg.Connection) -> None:
        ensure_dlq_topic(self.settings, self.topic, partitions=1)
        producer = Producer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "transactional.id": self.transactional_id,
                "enable.idempotence": True,
                "acks": "all",
                "transaction.timeout.ms": int(self.options.timeout_s * 2000),
            }
        )
        deadline = time.monotonic() + self.options.timeout_s
        retrying(producer.init_transactions, deadline, what="init_transactions")  # fences the old one
        tail = last_published(self.settings, self.topic, self.options.timeout_s)
        row = conn.execute("SELECT last_id FROM sink_dlq_relay WHERE relay = %s",
                           (self.transactional_id,)).fetchone()  # fmt: skip
        self.producer = producer
        self.last_id = max(tail, row[0] if row else 0)
        log.info("dlq relay ready", extra={"topic": self.topic, "last_id": self.last_id})

    def _fetch(self, conn: psycopg.Connection, after: int, limit: int) -> list[Letter]:
        rows = conn.execute(SELECT, (after, self._sources, limit)).fetchall()
        return [Letter(*row) for row in rows]

    def _publish(self, letters: list[Letter]) -> None:
        producer = self.producer
        assert producer is not None
        producer.begin_transaction()
        for letter in letters:
            producer.produce(self.topic, key=letter.key, value=letter.value, partition=PARTITION,
                             headers=letter.headers())  # fmt: skip
        if self._before_commit is not None:
            self._before_commit(producer, letters)
        deadline = time.monotonic() + self.options.timeout_s
        retrying(producer.commit_transaction, deadline, what="commit_transaction")
        self.last_id = letters[-1].id
        self.published += len(letters)
        for letter in letters:
            DEAD_LETTERS.labels(PROCESSOR, letter.reason).inc()
        log.info("sink dead letters published",
                 extra={"topic": self.topic, "count": len(letters), "first_id": letters[0].id,
                        "last_id": letters[-1].id})  # fmt: skip

    def _reset(self) -> None:
        """Forget the producer (the next one fences it) and, with the connection, the lock."""
        self.producer = None
        self.last_id = None
        self._release()

    def _release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None


def last_published(settings: Settings, topic: str, timeout: float = 30.0) -> int:
    """The greatest `dlq.reject_id` among the committed records of `topic`'s partition 0
    (0 when there is none), read from its end backwards in growing windows: aborted
    transactions may leave the tail without a committed record."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"sink-dlq-tail-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",  # the high watermark is the last stable offset
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        partitions_of(consumer, topic, timeout)  # a topic just created: wait for its metadata
        low, end = watermarks(consumer, TopicPartition(topic, PARTITION))
        window = 64
        while end > low:
            start = max(low, end - window)
            found = _greatest_id(consumer, topic, start, end, timeout)
            if found is not None:
                return found
            end, window = start, window * 4
        return 0
    finally:
        consumer.close()


def _greatest_id(consumer: Consumer, topic: str, start: int, end: int, timeout: float) -> int | None:
    """The greatest reject id of the committed records in [start, end), None if none."""
    consumer.assign([TopicPartition(topic, PARTITION, start)])
    deadline = time.monotonic() + timeout
    best: int | None = None
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                return best
            continue
        if msg.offset() >= end:
            return best
        found = parse_headers(msg.headers()).get(REJECT_ID, "")
        if found.isdigit():
            best = max(best or 0, int(found))
        if msg.offset() + 1 >= end:
            return best
    raise TimeoutError(f"{topic}[{PARTITION}]: offsets {start}..{end} not read in {timeout:.0f}s")
