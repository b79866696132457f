"""Small confluent-kafka helpers shared by the runtime, the config table and the sinks."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from schemas.settings import Settings
from schemas.topics import topic_name

log = logging.getLogger(__name__)

# A transaction open this long is in flight or abandoned (its publisher killed), not one whose
# commit markers are being written (milliseconds): a read stops at the last stable offset then
OPEN_WAIT_S = 5.0


class ConsumerFailed(RuntimeError):
    """The consumer reported a fatal error: it will deliver nothing more, a new one is needed."""


def check_consumer_error(error: KafkaError) -> None:
    """Raise ConsumerFailed for a fatal consumer error. librdkafka delivers one (e.g. a static
    member fenced by FENCED_INSTANCE_ID, as a rejoin after a broker restart can cause) as an
    error message with code `_FATAL` whose fatal() is False, and then consume() returns nothing
    for ever: a loop that skipped it would idle "healthy" with lag growing."""
    if error.fatal() or error.code() == KafkaError._FATAL:
        raise ConsumerFailed(f"the consumer failed: {error}")


def watermarks(consumer: Consumer, tp: TopicPartition, timeout: float = 30.0) -> tuple[int, int]:
    """(low, high) offsets, retrying while a fresh topic's leader is still being elected."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        except KafkaException as exc:
            if (
                time.monotonic() > deadline
                or not exc.args[0].retriable()
                and exc.args[0].name()
                not in (
                    "NOT_LEADER_FOR_PARTITION",
                    "LEADER_NOT_AVAILABLE",
                    "UNKNOWN_TOPIC_OR_PART",
                    "_TRANSPORT",
                    "_TIMED_OUT",
                    "_ALL_BROKERS_DOWN",  # a broker restart: it comes back
                )
            ):
                raise
            time.sleep(0.1)


def partitions_of(consumer: Consumer, topic: str, timeout: float = 30.0) -> list[int]:
    """Partition ids of a topic, waiting for its metadata to appear."""
    deadline = time.monotonic() + timeout
    while True:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is not None and meta.error is None and meta.partitions:
            return sorted(meta.partitions)
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} has no metadata")
        time.sleep(0.1)


def offset_ranges(bootstrap: str, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
    """Each partition's (low, high) watermarks, looked up read_uncommitted. A read_committed lookup
    answers the last stable offset, which stops before a transaction whose commit returned
    but whose markers the coordinator has not written yet: a read that ended there would miss
    a publish that had just answered its caller."""
    lookup = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{uuid.uuid4().hex}",
                       "isolation.level": "read_uncommitted", "enable.auto.commit": False})  # fmt: skip
    try:
        return {p: watermarks(lookup, TopicPartition(topic, p)) for p in partitions}
    finally:
        lookup.close()


def read_to_end(
    consumer: Consumer,
    bootstrap: str,
    topic: str,
    on_value: Callable[[bytes], None],
    timeout: float = 30.0,
    stop: threading.Event | None = None,
    open_wait_s: float = OPEN_WAIT_S,
) -> None:
    """Assign every partition of `topic` from its first offset and hand each record's value to
    `on_value` until the (read_committed) consumer's position reaches the high watermark each
    partition had at the call. Done by position, not by end-of-partition events: the position
    moves past commit markers and aborted records, and the last record's position ends the read
    without waiting for another fetch. A transaction still open at the call is waited for, up
    to `open_wait_s` without progress at the last stable offset: a commit's markers take
    milliseconds, so one open longer is left out, as read_committed would. The consumer stays
    assigned, at the end. The first offsets are given, not OFFSET_BEGINNING: librdkafka would
    look each up on its own, and a first fetch of the partitions already known (empty ones)
    waits out `fetch.wait.max.ms` before the others join it."""
    ranges = offset_ranges(bootstrap, topic, partitions_of(consumer, topic))
    pending = {p: high for p, (low, high) in ranges.items() if high > low}
    consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in ranges.items()])
    moved = {p: (-1, time.monotonic()) for p in pending}  # last position seen, and since when
    deadline = time.monotonic() + timeout
    while pending and not (stop is not None and stop.is_set()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic} could not be read to its end in {timeout:.0f} s")
        msg = consumer.poll(0.05)
        if msg is not None and msg.error() is not None:
            check_consumer_error(msg.error())
        elif msg is not None and msg.value() is not None:
            on_value(msg.value())
        now = time.monotonic()
        for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
            seen, since = moved[tp.partition]
            if tp.offset >= pending[tp.partition]:
                del pending[tp.partition]
            elif tp.offset != seen:
                moved[tp.partition] = (tp.offset, now)
            elif now - since < open_wait_s:
                continue
            elif tp.offset >= 0 and _at_stable_end(consumer, tp):
                log.info("a transaction is open: read to the last stable offset",
                         extra={"topic": topic, "partition": tp.partition, "offset": tp.offset})  # fmt: skip
                del pending[tp.partition]
            else:
                moved[tp.partition] = (tp.offset, now)  # not there (or unknown): look again later


def _at_stable_end(consumer: Consumer, position: TopicPartition) -> bool:
    """The (read_committed) consumer's position is at its last stable offset."""
    try:
        return position.offset >= watermarks(consumer, position, timeout=5)[1]
    except KafkaException:
        return False


def committed_reader(settings: Settings, base_topic: str) -> Consumer:
    """A consumer of every partition of a topic from its beginning, committed records only
    (how tests and benchmarks see what a processor's transactions made visible)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    topic = topic_name(base_topic, settings)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions_of(consumer, topic)])
    return consumer
