"""Ingest against the real Kafka broker: what a 202 promises is on the topic, keyed by
customer, Avro-encoded; sync mode gets the processor's result over loyalty.results."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from fastapi.testclient import TestClient

from ingest.app import create_app
from ingest.config import IngestConfig
from plumbing.config_table import publish_program
from processors.runtime.testing import wait_for
from schemas.codec import decode, encode
from schemas.program import EventType, Program
from schemas.settings import Settings
from schemas.topics import EVENTS_LOYALTY, EVENTS_TRACKING, LOYALTY_RESULTS, topic_name
from schemas.wallet import from_json

pytestmark = pytest.mark.integration
KEYS = {"k": frozenset({"ingest", "admin"})}
H = {"X-API-Key": "k"}
PROGRAM = Program(
    event_types=[
        EventType(name="PURCHASE", schema={"type": "object", "required": ["amount"]}),
        EventType(name="PAGE_VIEW", path="tracking"),
    ]
)


def read_topic(settings: Settings, base: str, expect: int, timeout: float = 20.0) -> list:
    """All messages of a topic from the beginning, once at least `expect` are there."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    topic = topic_name(base, settings)
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    found, deadline = [], time.monotonic() + timeout
    try:
        while len(found) < expect and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.2):
                if msg.error() is None:
                    found.append((msg.key().decode(), decode(msg.value(), "Event"), msg.partition()))
    finally:
        consumer.close()
    return found


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    publish_program(settings, PROGRAM)
    app = create_app(settings, IngestConfig(api_keys=KEYS))  # real program table, producer, replies
    with TestClient(app) as c:
        yield c


def test_accepted_events_are_on_their_topics(client, settings):
    resp = client.post(
        "/behavior/events",
        json={
            "customer_id": "c1",
            "type": "PURCHASE",
            "reference": "o1",
            "properties": {"amount": 5},
        },
        headers=H,
    )
    assert resp.status_code == 202, resp.text
    accepted = resp.json()["data"]
    track = client.post("/behavior/events", json={"customer_id": "c2", "type": "PAGE_VIEW"}, headers=H)
    assert track.status_code == 202
    [(key, record, partition)] = read_topic(settings, EVENTS_LOYALTY, 1)
    assert key == "c1" and record["id"] == accepted["id"] and record["type"] == "PURCHASE"
    assert partition == accepted["queue"]["partition"]
    assert accepted["queue"]["topic"] == topic_name(EVENTS_LOYALTY, settings)
    [(key, record, _)] = read_topic(settings, EVENTS_TRACKING, 1)
    assert key == "c2" and record["path"] == "tracking"


def test_bulk_lands_exactly_once(client, settings):
    events = [
        {
            "customer_id": f"c{i % 7}",
            "type": "PURCHASE",
            "reference": f"r{i}",
            "properties": {"amount": i},
        }
        for i in range(300)
    ]
    events[10]["type"] = "UNKNOWN"
    resp = client.post("/behavior/events/bulk", json={"events": events}, headers=H)
    body = resp.json()
    assert resp.status_code == 200 and body["accepted"] == 299 and body["rejected"] == 1
    ids = {item["id"] for item in body["data"] if item["status"] == "accepted"}
    found = read_topic(settings, EVENTS_LOYALTY, 299)
    assert sorted(r["id"] for _, r, _ in found) == sorted(ids)
    assert all(key == r["customer_id"] for key, r, _ in found)


def fake_processor(settings: Settings, stop: threading.Event) -> None:
    """Answers each loyalty event with a RESOLVED result, as the loyalty processor would."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"fake-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic_name(EVENTS_LOYALTY, settings)])
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 0})
    while not stop.is_set():
        msg = consumer.poll(0.1)
        if msg is None or msg.error():
            continue
        event = decode(msg.value(), "Event")
        detail = {
            "rules_applied": ["base"],
            "accumulations": [{"amount": 7.0}],
            "redemptions": [],
            "tier": None,
            "event": {},
            "duplicate": False,
        }
        result = {
            "event_id": event["id"],
            "customer_id": event["customer_id"],
            "type": event["type"],
            "kind": event["kind"],
            "status": "RESOLVED",
            "reason": None,
            "points": 7.0,
            "wallet": from_json({"customer_id": event["customer_id"], "points": 7.0,
                                 "balance": {"POINTS": 7.0}, "lifetime": 7.0}),  # fmt: skip
            "config_version": 1,
            "processed_at": int(time.time() * 1000),
            "reply_to": event["reply_to"],
            "detail": json.dumps(detail),
        }
        producer.produce(
            topic_name(LOYALTY_RESULTS, settings), encode("Result", result), event["customer_id"]
        )
        producer.flush(5)
    consumer.close()


def test_sync_wait_gets_the_result_over_kafka(client, settings):
    stop = threading.Event()
    worker = threading.Thread(target=fake_processor, args=(settings, stop), daemon=True)
    worker.start()
    try:
        body = {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": 7}}
        resp = client.post("/behavior/events?wait=true&timeout=15", json=body, headers=H)
        assert resp.status_code == 200, resp.text
        data = resp.json()["data"]
        assert data["status"] == "RESOLVED" and data["points"] == 7.0
        assert data["rules_applied"] == ["base"] and data["wallet"]["points"] == 7.0
    finally:
        stop.set()
        worker.join(10)


def test_admin_program_publishes_and_ingest_hot_swaps(client):
    assert client.get("/admin/program", headers=H).json()["data"]["version"] >= 1
    new = PROGRAM.model_dump(mode="json", by_alias=True)
    new["event_types"].append({"name": "REVIEW"})
    resp = client.put("/admin/program", json=new, headers={**H, "If-Match": "*"})  # docs/admin.md
    assert resp.status_code == 200
    version = resp.json()["data"]["version"]
    review = {"customer_id": "c1", "type": "REVIEW"}
    wait_for(
        lambda: client.get("/admin/program", headers=H).json()["data"]["version"] >= version,
        timeout=15,
        what="the new program version",
    )
    assert client.post("/behavior/events", json=review, headers=H).status_code == 202
