"""The loyalty processor checks events that skipped ingest and the router (produced straight to
events.loyalty): an undefined type or properties against the type's JSON Schema are REJECTED
with the reason and ingest's field errors, and nothing of them is applied."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.testing import TestDriver
from schemas.program import Campaign, EventType, Program

NOW = 1_700_000_000_000
PROGRAM = Program(
    version=4,
    event_types=[
        EventType(name="PURCHASE", schema={"type": "object", "properties": {"amount": {"type": "number"}},
                                           "required": ["amount"]}),  # fmt: skip
    ],
    campaigns=[Campaign(id="base", condition="properties.amount > 0", formula="properties.amount")],
)


def send(driver: TestDriver, type_: str, properties: Any, **fields: Any) -> list[dict[str, Any]]:
    event = {
        "id": fields.pop("id", None) or str(uuid.uuid4()),
        "customer_id": "c1",
        "type": type_,
        "issued_at": NOW,
        "received_at": NOW,
        "properties": orjson.dumps(properties).decode(),
        **fields,
    }
    out = driver.send("events.loyalty", "c1", event)
    results = [{**v, "detail": orjson.loads(v["detail"])} for t, _, v in out if t == "loyalty.results"]
    if results and results[0]["status"] == "REJECTED":
        assert len(out) == 1, "a rejected event emits its result only (no webhook, no profile)"
    return results


def test_an_undefined_type_is_rejected_and_nothing_is_applied() -> None:
    driver = TestDriver(LoyaltyProcessor(partitions=1), PROGRAM, now=NOW)
    [res] = send(driver, "SPEND", {"amount": 50}, reply_to="ingest-1")
    assert res["status"] == "REJECTED" and res["points"] == 0
    assert res["reason"] == "unknown_event_type: type: event type 'SPEND' is not defined in the program"
    assert res["detail"]["error"]["fields"] == [
        {"path": "type", "reason": "event type 'SPEND' is not defined in the program"}
    ]
    assert res["config_version"] == 4 and res["reply_to"] == "ingest-1"
    assert driver.store("customers") == {} and driver.store("events") == {}


def test_properties_against_the_schema_are_rejected_naming_the_field() -> None:
    driver = TestDriver(LoyaltyProcessor(partitions=1), PROGRAM, now=NOW)
    [res] = send(driver, "PURCHASE", {"amount": "12"})
    assert res["status"] == "REJECTED" and res["points"] == 0
    assert res["reason"] == "validation_error: properties.amount: '12' is not of type 'number'"
    assert res["detail"]["event"]["properties"] == {"amount": "12"}
    [missing] = send(driver, "PURCHASE", {})
    assert missing["detail"]["error"]["fields"][0]["reason"] == "'amount' is a required property"
    [valid] = send(driver, "PURCHASE", {"amount": 12})
    assert valid["status"] == "RESOLVED" and valid["points"] == 12
    assert valid["wallet"]["points"] == 12


def test_a_repeat_of_an_applied_event_keeps_its_first_result_after_the_type_is_gone() -> None:
    driver = TestDriver(LoyaltyProcessor(partitions=1), PROGRAM, now=NOW)
    [first] = send(driver, "PURCHASE", {"amount": 7}, id="e1")
    driver.apply_config(PROGRAM.model_copy(update={"event_types": [], "version": 5}))
    [again] = send(driver, "PURCHASE", {"amount": "seven"}, id="e1")
    assert again["status"] == first["status"] == "RESOLVED" and again["detail"]["duplicate"] is True
