"""A record delivery cannot decode or route goes to delivery.input.dlq with its original bytes
and headers, and the webhooks behind it are still delivered (it used to crash-loop on a
truncated body, a bad `data` JSON or a tombstone, and to drop undecodable records unseen)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from plumbing.kafka_util import committed_reader
from processors.delivery.input_dlq import INPUT_DLQ
from processors.delivery.loop import DeliveryService, Options
from processors.delivery.testing import notification, produce
from processors.runtime.dead_letters import parse_headers
from processors.runtime.testing import wait_for
from schemas.codec import encode
from schemas.program import Delivery, Program, Webhook
from schemas.settings import Settings
from schemas.topics import JOURNEYS_ACTIVITY, NOTIFICATIONS, topic_name

pytestmark = pytest.mark.integration


def poisons() -> dict[str, bytes | None]:
    valid = encode("Notification", notification("CUSTOMER_ACCUMULATION", {"points": 1}))
    return {
        "garbage": b"\x00\xffgarbage",
        "unknown-fingerprint": b"\xc3\x01" + b"\x01" * 8 + valid[10:],
        "json-object": b'{"id": "x"}',
        "truncated": valid[:-3],
        "tombstone": None,
    }


def test_poison_records_are_dead_lettered_and_delivery_goes_on(settings: Settings, receiver,
                                                               tmp_path) -> None:  # fmt: skip
    hook = receiver.routes["/hook"]
    program = Program(
        webhooks=[Webhook(id="hook", url=receiver.url("/hook"), events=["CUSTOMER_ACCUMULATION"])],
        delivery=Delivery(retry_tiers=["200ms"], timeout_s=2),
    )
    service = DeliveryService(settings, lambda: program, Options(state_dir=tmp_path, group_id="dp")).start()
    try:
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
        sent = []
        for topic in (NOTIFICATIONS, JOURNEYS_ACTIVITY):
            for i, (kind, raw) in enumerate(poisons().items()):
                key = f"{kind}-key".encode()
                producer.produce(topic_name(topic, settings), raw, key, partition=i % settings.partitions)
                sent.append((topic_name(topic, settings), raw, key))
        bad_data = {**notification("CUSTOMER_ACCUMULATION", {}), "data": "not json"}
        bad_activity = {"id": "a1", "journey_id": "j", "instance_id": "i", "customer_id": "c",
                        "kind": "ACTION", "action": "webhook", "at": 1, "data": "not json"}  # fmt: skip
        for topic, value in ((NOTIFICATIONS, bad_data), (JOURNEYS_ACTIVITY, bad_activity)):
            raw = encode("Notification" if topic == NOTIFICATIONS else "JourneyActivity", value)
            producer.produce(topic_name(topic, settings), raw, b"handler-key")
            sent.append((topic_name(topic, settings), raw, b"handler-key"))
        assert producer.flush(10) == 0
        good = [notification("CUSTOMER_ACCUMULATION", {"points": n}, customer=f"c{n}") for n in range(6)]
        produce(settings, NOTIFICATIONS, good)
        wait_for(lambda: set(hook.unique) >= {n["id"] for n in good}, timeout=30, what="good webhooks")
        letters = read_until(settings, len(sent))
        assert service.healthy()
    finally:
        service.stop()
    got = sorted(((parse_headers(m.headers())["dlq.source.topic"], m.value(), m.key()) for m in letters),
                 key=repr)  # fmt: skip
    assert got == sorted(sent, key=repr)
    reasons = {parse_headers(m.headers())["dlq.reason"] for m in letters}
    assert reasons == {"undecodable", "processing"}
    assert {parse_headers(m.headers())["dlq.processor"] for m in letters} == {"delivery"}


def read_until(settings: Settings, count: int, timeout: float = 30) -> list:
    consumer = committed_reader(settings, INPUT_DLQ)
    seen: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < count:
            assert time.monotonic() < deadline, f"{len(seen)} of {count} dead letters"
            seen += [m for m in consumer.consume(100, 0.2) if not m.error()]
    finally:
        consumer.close()
    return seen
