"""Small confluent-kafka helpers shared by the runtime, the config table and the sinks."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from schemas.settings import Settings
from schemas.topics import topic_name


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
