"""Kafka plumbing for delivery: an async-friendly producer (awaitable durable sends) and the
consumer settings. The service owns its consume loop (no runtime transactions): offsets are
committed only after each message's work is finished, so delivery is at-least-once."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer

from schemas.codec import encode
from schemas.settings import Settings
from schemas.topics import DELIVERIES, schema_for, topic_name

log = logging.getLogger(__name__)
RETRY_PREFIX = "delivery.retry."


def value_schema(base: str) -> str:
    """Avro record of a logical topic; custom retry tiers carry Notification too."""
    return "Notification" if base.startswith(RETRY_PREFIX) else (schema_for(base) or "")


class KafkaOutbox:
    """Produces retry/DLQ messages (awaited until acked) and attempt records (fire and forget)."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "partitioner": "murmur2_random",
            }
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="delivery-producer", daemon=True)
        self._thread.start()

    async def send(self, topic: str, key: str, value: dict[str, Any]) -> None:
        fut: asyncio.Future[None] = self.loop.create_future()

        def on_delivery(err: Any, _msg: Any) -> None:
            self.loop.call_soon_threadsafe(_resolve, fut, err)

        await self._produce(topic, key, value, on_delivery)
        await fut

    async def send_raw(self, physical_topic: str, key: bytes | None, value: bytes | None,
                       headers: list[tuple[str, bytes]]) -> None:  # fmt: skip
        """Produce bytes as they are (a dead letter keeps the original record) and await the ack."""
        fut: asyncio.Future[None] = self.loop.create_future()

        def on_delivery(err: Any, _msg: Any) -> None:
            self.loop.call_soon_threadsafe(_resolve, fut, err)

        while True:
            try:
                self.producer.produce(physical_topic, value, key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                await asyncio.sleep(0.01)
        await fut

    def record(self, attempt: dict[str, Any]) -> None:
        try:
            self._produce_now(DELIVERIES, attempt["customer_id"], attempt, None)
        except BufferError:
            log.warning("attempt record dropped: producer queue full")

    async def _produce(self, topic: str, key: str, value: dict[str, Any], cb: Any) -> None:
        while True:
            try:
                return self._produce_now(topic, key, value, cb)
            except BufferError:
                await asyncio.sleep(0.01)

    def _produce_now(self, topic: str, key: str, value: dict[str, Any], cb: Any) -> None:
        self.producer.produce(
            topic_name(topic, self.settings),
            key=key.encode(),
            value=encode(value_schema(topic), value),
            on_delivery=cb,
        )

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(2)
        self.producer.flush(timeout)


def _resolve(fut: asyncio.Future[None], err: Any) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(KafkaException(err))


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
        "fetch.wait.max.ms": 100,  # a released retry hold is fetched promptly
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
