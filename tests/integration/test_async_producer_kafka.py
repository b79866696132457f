"""plumbing.producer against the broker: an awaited send is acknowledged and readable, with the
key, headers and TOPIC_PREFIX it was given, for ingest's and delivery's ways of sending."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Consumer, TopicPartition

from plumbing.producer import AsyncProducer, Delivered
from schemas.settings import Settings
from schemas.topics import DELIVERY_DLQ, topic_name

pytestmark = pytest.mark.integration


def _read(settings: Settings, delivered: list[Delivered]) -> list[tuple[bytes, bytes, list]]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "read"})
    try:
        got = []
        for d in delivered:
            consumer.assign([TopicPartition(d.topic, d.partition, d.offset)])
            msg = consumer.poll(30)
            assert msg is not None and not msg.error(), msg and msg.error()
            got.append((msg.key(), msg.value(), msg.headers() or []))
        return got
    finally:
        consumer.close()


def test_sends_are_acknowledged_at_their_offsets(settings: Settings) -> None:
    async def go(producer: AsyncProducer) -> list[Delivered]:
        one = await producer.send(DELIVERY_DLQ, "c1", b"v1", [("reason", b"x")])
        many = await producer.send_many([(DELIVERY_DLQ, "c2", b"v2"), (DELIVERY_DLQ, b"c3", b"v3")])
        assert producer.produce_nowait(DELIVERY_DLQ, None, b"v4")  # fire and forget
        return [one, *many]

    # ingest's bounded wait polled on its loop, delivery's unbounded one with a poll thread, and
    # the other two pairings; a second event loop must get its acknowledgements too
    for ack_timeout_s, poll_on_loop in ((5.0, True), (None, False), (5.0, False), (None, True)):
        producer = AsyncProducer(settings, ack_timeout_s=ack_timeout_s, poll_on_loop=poll_on_loop).start()
        try:
            delivered = asyncio.run(go(producer))
            delivered.append(asyncio.run(producer.send(DELIVERY_DLQ, "c5", b"v5")))  # another loop
        finally:
            producer.close()
        assert all(isinstance(d, Delivered) for d in delivered)
        assert {d.topic for d in delivered} == {topic_name(DELIVERY_DLQ, settings)}
        assert _read(settings, delivered) == [
            (b"c1", b"v1", [("reason", b"x")]),
            (b"c2", b"v2", []),
            (b"c3", b"v3", []),
            (b"c5", b"v5", []),
        ]
