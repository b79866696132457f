"""Kafka helpers for delivery tests and the benchmark: produce inputs, read outputs by deadline."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from processors.delivery.kafka_io import partitions
from schemas.codec import decode, encode
from schemas.settings import Settings
from schemas.topics import schema_for, topic_name


def notification(event: str, data: dict[str, Any], customer: str = "c1") -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "event": event,
        "customer_id": customer,
        "data": json.dumps(data),
        "created_at": int(time.time() * 1000),
    }


def produce(settings: Settings, base: str, values: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for value in values:
        producer.produce(
            topic_name(base, settings),
            key=value["customer_id"].encode(),
            value=encode(schema_for(base), value),
        )
    assert producer.flush(10) == 0


class TopicReader:
    """Reads a topic from the beginning; `until` polls until a predicate holds on all seen."""

    def __init__(self, settings: Settings, base: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": f"test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        topic = topic_name(base, settings)  # assign, not subscribe: no group join delay
        parts = partitions(self.consumer, topic)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.schema = "Notification" if base.startswith("delivery.retry.") else schema_for(base)
        self.seen: list[dict[str, Any]] = []

    def until(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not done(self.seen):
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met; seen {self.seen}")
            for msg in self.consumer.consume(100, 0.1):
                if not msg.error():
                    self.seen.append(decode(msg.value(), self.schema))
        return self.seen

    def close(self) -> None:
        self.consumer.close()

