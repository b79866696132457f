"""JSON producers (docs/producing.md): bodies of POST /behavior/events produced as JSON to
events.inbound, through the real router and loyalty Runners on the real broker.

A valid PURCHASE credits the wallet; an invalid one gives a REJECTED result naming the field,
which the sink stores and GET /behavior/events/{id} serves; a tracking type reaches
events.tracking only; bytes that are not JSON land in router.dlq.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from fastapi.testclient import TestClient

from ingest.app import create_app
from ingest.config import IngestConfig
from plumbing.config_table import publish_program
from plumbing.kafka_util import committed_reader
from processors.loyalty.processor import LoyaltyProcessor
from processors.router.processor import RouterProcessor
from processors.runtime.runner import Runner, RuntimeOptions
from processors.runtime.testing import wait_for
from schemas.codec import decode
from schemas.intake import event_id
from schemas.program import Campaign, EventType, Program
from schemas.settings import Settings
from schemas.topics import EVENTS_INBOUND, EVENTS_LOYALTY, EVENTS_TRACKING, LOYALTY_RESULTS, topic_name
from sinks.sink import Sink, SinkOptions

pytestmark = pytest.mark.integration
AMOUNT = {"type": "object", "properties": {"amount": {"type": "number", "minimum": 0}}}
PROGRAM = Program(
    event_types=[
        EventType(name="PURCHASE", schema=AMOUNT),
        EventType(name="PAGE_VIEW", path="tracking"),
    ],
    campaigns=[Campaign(id="base", condition="properties.amount > 0", formula="properties.amount")],
)


@pytest.fixture
def stack(cfg: Settings, tmp_path) -> Iterator[Settings]:
    """The router, the loyalty processor and the sink, on this test's prefix and database."""
    version = publish_program(cfg, PROGRAM)
    runners = [
        Runner(proc, cfg, RuntimeOptions(state_dir=tmp_path / proc.name, instance_id=proc.name)).start()
        for proc in (RouterProcessor(), LoyaltyProcessor(partitions=cfg.partitions))
    ]
    for runner in runners:
        runner.program_table.wait_for_version(version, timeout=60)
    sink = Sink(cfg, SinkOptions(batch_size=500, linger_ms=50)).start()
    try:
        yield cfg
    finally:
        sink.stop()
        for runner in runners:
            runner.stop()
        assert all(r.error is None for r in runners)


def produce(settings: Settings, key: str, value: bytes) -> None:
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "partitioner": "murmur2_random"}
    )
    producer.produce(topic_name(EVENTS_INBOUND, settings), value=value, key=key.encode())
    assert producer.flush(30) == 0


def produce_json(settings: Settings, body: dict[str, Any]) -> None:
    produce(settings, body["customer_id"], orjson.dumps(body))


class Topic:
    """Every committed record of one topic, read as it arrives."""

    def __init__(self, settings: Settings, base: str, avro: bool = True) -> None:
        self.consumer: Consumer = committed_reader(settings, base)
        self.avro = avro
        self.seen: list[Any] = []

    def until(self, check: Callable[[list[Any]], Any], timeout: float = 90) -> Any:
        def poll() -> Any:
            for msg in self.consumer.consume(500, 0.2):
                if not msg.error():
                    self.seen.append(decode(msg.value()) if self.avro else msg)
            return check(self.seen)

        return wait_for(poll, timeout=timeout, what="records on the topic")

    def close(self) -> None:
        self.consumer.close()


def result_for(ident: str) -> Callable[[list[dict]], dict | None]:
    return lambda seen: next((r for r in seen if r["event_id"] == ident), None)


def test_a_json_purchase_credits_the_wallet(stack: Settings) -> None:
    body = {"customer_id": "c1", "type": "PURCHASE", "reference": "o1", "properties": {"amount": 40}}
    results = Topic(stack, LOYALTY_RESULTS)
    try:
        produce_json(stack, body)
        res = results.until(result_for(event_id("c1", "o1")))
    finally:
        results.close()
    assert res["status"] == "RESOLVED" and res["points"] == 40
    assert res["wallet"]["points"] == 40


def test_an_invalid_json_event_is_rejected_with_the_field_and_stored(stack: Settings) -> None:
    body = {"customer_id": "c2", "type": "PURCHASE", "reference": "o2", "properties": {"amount": -5}}
    results = Topic(stack, LOYALTY_RESULTS)
    try:
        produce_json(stack, body)
        res = results.until(result_for(event_id("c2", "o2")))
    finally:
        results.close()
    assert res["status"] == "REJECTED" and res["points"] == 0
    assert res["reason"].startswith("validation_error: properties.amount: ")
    fields = orjson.loads(res["detail"])["error"]["fields"]
    assert fields == [{"path": "properties.amount", "reason": "-5 is less than the minimum of 0"}]
    app = create_app(stack, IngestConfig(api_keys={"k": frozenset({"ingest"})}), listen_for_results=False)
    with TestClient(app) as reader:

        def stored() -> dict | None:
            resp = reader.get(f"/behavior/events/{res['event_id']}", headers={"X-API-Key": "k"})
            return resp.json()["data"] if resp.status_code == 200 else None

        row = wait_for(stored, timeout=60, what="the sink to store the REJECTED result")
    assert row["status"] == "REJECTED" and row["customer_id"] == "c2" and row["reference"] == "o2"
    assert row["result"]["error"]["fields"] == fields


def test_a_tracking_type_reaches_events_tracking_only(stack: Settings) -> None:
    loyalty, tracking = Topic(stack, EVENTS_LOYALTY), Topic(stack, EVENTS_TRACKING)
    results = Topic(stack, LOYALTY_RESULTS)
    view = {"customer_id": "c3", "type": "PAGE_VIEW", "reference": "v1", "properties": {"page": "/"}}
    marker = {"customer_id": "c3", "type": "PURCHASE", "reference": "m1", "properties": {"amount": 1}}
    try:
        produce_json(stack, view)
        produce_json(stack, marker)  # same key, routed after the view: its result ends the wait
        results.until(result_for(event_id("c3", "m1")))
        seen = tracking.until(lambda s: [e for e in s if e["id"] == event_id("c3", "v1")])
        routed = loyalty.until(lambda s: [e["id"] for e in s] or None)
    finally:
        for topic in (loyalty, tracking, results):
            topic.close()
    assert seen[0]["path"] == "tracking" and orjson.loads(seen[0]["properties"]) == {"page": "/"}
    assert routed == [event_id("c3", "m1")]
    assert all(r["event_id"] != event_id("c3", "v1") for r in results.seen)


def test_bytes_that_are_not_json_go_to_the_router_dlq(stack: Settings) -> None:
    letters = Topic(stack, "router.dlq", avro=False)
    try:
        produce(stack, "c4", b"{not json")
        letter = letters.until(lambda s: s[0] if s else None)
    finally:
        letters.close()
    headers = dict(letter.headers())
    assert letter.value() == b"{not json" and headers["dlq.reason"] == b"undecodable"
