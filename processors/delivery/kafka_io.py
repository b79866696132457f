"""Kafka plumbing for delivery: its outbox (awaitable durable sends on plumbing's producer) and
the consumer settings. The service owns its consume loop (no runtime transactions): offsets are
committed only after each message's work is finished, so delivery is at-least-once."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer

from plumbing.producer import AsyncProducer
from processors.delivery.policy import tier_of
from schemas.codec import encode
from schemas.settings import Settings
from schemas.topics import DELIVERIES, base_name, schema_for

log = logging.getLogger(__name__)


def value_schema(base: str) -> str:
    """Avro record of a logical topic; custom retry tiers carry Notification too."""
    return "Notification" if tier_of(base) is not None else (schema_for(base) or "")


ATTEMPTS_LINGER_MS = 100


class KafkaOutbox:
    """Delivery's writes: retry and DLQ messages (awaited until acked: their offset commits only
    after) on one AsyncProducer, attempt records (fire and forget) on a second one.

    Attempt records are one per webhook and nothing waits for them, so their producer lingers
    100 ms and reports failed writes only: on the 5 ms producer each record cost 40-85 us of
    CPU at 600-2,000 webhooks/s (a produce request per few records, a broker-thread wake-up per
    lone produce, a delivery report per record; docs/benchmarks.md#delivery). Retries and dead
    letters keep the 5 ms linger: a lane's worker awaits them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = AsyncProducer(settings, linger_ms=5, name="delivery-producer").start()
        self.attempts = AsyncProducer(
            settings,
            linger_ms=ATTEMPTS_LINGER_MS,
            config={"delivery.report.only.error": True},
            name="delivery-attempts",
        ).start()

    async def send(self, topic: str, key: str, value: dict[str, Any]) -> None:
        await self.producer.send(topic, key, encode(value_schema(topic), value))

    async def send_raw(self, physical_topic: str, key: bytes | None, value: bytes | None,
                       headers: list[tuple[str, bytes]]) -> None:  # fmt: skip
        """Produce bytes as they are (a dead letter keeps the original record) and await the ack."""
        await self.producer.send(base_name(physical_topic, self.settings), key, value, headers)

    def record(self, attempt: dict[str, Any]) -> None:
        value = encode(value_schema(DELIVERIES), attempt)
        if not self.attempts.produce_nowait(DELIVERIES, attempt["customer_id"], value):
            log.warning("attempt record dropped: producer queue full")

    def close(self, timeout: float = 10.0) -> None:
        self.producer.close(timeout)
        self.attempts.close(timeout)


def consumer(settings: Settings, group_id: str, instance_id: str | None = None) -> Consumer:
    conf = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
        "max.poll.interval.ms": 600000,
        "session.timeout.ms": 10000,  # a killed instance's partitions move within ~10 s
        # a fetch answers after at most 10 ms, not as soon as one record is there: at a trickle
        # (bench/e2e.py) a fetch per record cost 300-500 us of CPU per webhook (librdkafka's
        # broker thread, the consume hand-off, the loop's wake-up; ~66 partitions per fetch);
        # a few records per fetch halve it (docs/benchmarks.md#delivery). Idle, the service
        # fetches 100 times a second (17 instead of 8 ms of CPU per second). A released retry
        # hold is fetched within the same 10 ms.
        "fetch.wait.max.ms": 10,
        "fetch.min.bytes": 1_000_000,
        "topic.metadata.refresh.interval.ms": 10000,  # see retry topics made by others
    }
    if instance_id:
        conf["group.instance.id"] = instance_id
    return Consumer(conf)


def partitions(client: Consumer, topic: str, timeout: float = 15.0) -> list[int]:
    """A topic's partitions once metadata lists every one with a leader. A topic created a
    moment ago may be listed with no partitions yet: assigning those would read nothing."""
    deadline = time.monotonic() + timeout
    while True:
        meta = client.list_topics(topic, timeout=5).topics.get(topic)
        parts = meta.partitions if meta and meta.error is None else {}
        if parts and all(p.leader >= 0 and p.error is None for p in parts.values()):
            return sorted(parts)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no metadata with leaders for {topic}")
        time.sleep(0.1)
