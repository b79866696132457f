"""The router (events.inbound) and the producer helper judge a body exactly as POST
/behavior/events does: the same record for a valid body, the same field errors for an invalid
one (in the REJECTED result's detail, and in schemas.intake.Invalid)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from processors.router.processor import RouterProcessor
from processors.runtime.testing import TestDriver
from schemas.intake import Invalid, event_id
from schemas.producer import EventEncoder
from schemas.settings import Settings
from schemas.topics import EVENTS_INBOUND, EVENTS_LOYALTY, EVENTS_TRACKING, LOYALTY_RESULTS
from tests.support.ingest_fakes import PROGRAM
from tests.unit.test_ingest_api import H, Harness

INVALID = {
    "unknown type": {"customer_id": "c1", "type": "NOPE"},
    "schema": {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": -1}},
    "required": {"customer_id": "c1", "type": "PURCHASE", "properties": {}},
    "extra field": {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": 1}, "amout": 1},
    "amount bound": {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": 1e13}},
    "too old": {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": 1},
                "issued_at": "2000-01-01T00:00:00Z"},  # fmt: skip
    "strict integer": {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": 1}, "reserve": "5"},
    "control character": {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": 1, "n": "a\x00"}},
    "int64": {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": 1}, "metadata": {"x": 2**63}},
    "no customer": {"type": "PURCHASE", "properties": {"amount": 1}},
}


@pytest.fixture(scope="module")
def ingest() -> Any:
    harness = Harness()
    with TestClient(harness.app) as client:
        harness.client = client
        yield harness


def route(body: dict[str, Any], key: str = "c1") -> list[tuple[str, str, dict[str, Any]]]:
    driver = TestDriver(RouterProcessor(), PROGRAM, now=int(time.time() * 1000))
    return driver.send(EVENTS_INBOUND, key, body)


@pytest.mark.parametrize("case", sorted(INVALID))
def test_an_invalid_body_gets_the_422_field_errors_as_a_rejected_result(ingest, case: str) -> None:
    body = INVALID[case]
    answer = ingest.client.post("/behavior/events", content=orjson.dumps(body), headers=H)
    assert answer.status_code == 422
    [(topic, key, result)] = route(body)
    assert topic == LOYALTY_RESULTS and key == body.get("customer_id", "c1")
    assert result["status"] == "REJECTED" and result["points"] == 0
    detail = orjson.loads(result["detail"])
    assert detail["error"] == answer.json()["error"]
    with pytest.raises(Invalid) as raised:
        EventEncoder(PROGRAM, Settings()).event(body)
    assert raised.value.body()["error"] == answer.json()["error"]


def test_a_valid_body_is_routed_as_ingest_produces_it(ingest) -> None:
    for body, topic in (
        ({"customer_id": "c2", "type": "PURCHASE", "reference": "o1", "properties": {"amount": 5},
          "tags": ["a"], "redeem": [{"reward_id": "POINTS", "amount": 1}]}, EVENTS_LOYALTY),  # fmt: skip
        ({"customer_id": "c2", "type": "PAGE_VIEW", "reference": "v1"}, EVENTS_TRACKING),
    ):
        assert ingest.client.post("/behavior/events", json=body, headers=H).status_code == 202
        sent_topic, _, sent = ingest.producer.sent[-1]
        [(routed_topic, key, routed)] = route(body)
        assert routed_topic == sent_topic == topic and key == "c2"
        assert routed["id"] == sent["id"] == event_id("c2", body["reference"])
        times = ("issued_at", "received_at")
        assert {k: v for k, v in routed.items() if k not in times} == {
            k: v for k, v in sent.items() if k not in times
        }


def test_the_rejected_result_names_the_event_for_a_lookup() -> None:
    [(_, _, result)] = route({"customer_id": "c3", "type": "NOPE", "reference": "r9"}, key="k")
    assert result["event_id"] == event_id("c3", "r9") and result["customer_id"] == "c3"
    assert result["reason"] == "unknown_event_type: type: event type 'NOPE' is not defined in the program"
    assert orjson.loads(result["detail"])["event"]["reference"] == "r9"


def test_the_producer_helper_encodes_the_record_for_its_topic() -> None:
    message = EventEncoder(PROGRAM, Settings(topic_prefix="p.")).message(
        {"customer_id": "c4", "type": "PAGE_VIEW", "reference": "x"}
    )
    assert message.topic == "p.events.tracking" and message.key == b"c4"
    assert message.value[:2] == b"\xc3\x01" and message.id == event_id("c4", "x")
