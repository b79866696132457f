"""BUDGET_DECISION commands and CAMPAIGN_BUDGET_EXHAUSTED notifications made by the real loyalty
processor (in memory), for the sink's campaign_budgets tests."""

from __future__ import annotations

import uuid

import orjson

from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.testing import Emitted, TestDriver
from schemas import topics as t
from schemas.codec import decode, encode
from schemas.program import Program

NOW = 1_790_000_000_000
BUDGETED = {"id": "launch", "name": "Launch", "formula": "30", "budget": 100, "reward_id": "POINTS"}


def walk(
    purchases: int, budget: float | None = 100, campaign_id: str = "launch"
) -> tuple[list[dict], list[dict]]:
    """(BUDGET_DECISION records, CAMPAIGN_BUDGET_EXHAUSTED notifications), as the sink decodes
    them, of `purchases` purchases by different customers one minute apart, 30 points each."""
    campaign = {**BUDGETED, "id": campaign_id, "budget": budget}
    prog = Program.model_validate({"version": 1, "campaigns": [campaign]})
    driver = TestDriver(LoyaltyProcessor(1), prog, now=NOW)
    out: list[Emitted] = []
    for n in range(purchases):
        event = {
            "id": str(uuid.uuid4()),
            "customer_id": f"c{n}",
            "type": "PURCHASE",
            "issued_at": driver.clock.now_ms(),
            "received_at": driver.clock.now_ms(),
            "properties": orjson.dumps({"amount": 10}).decode(),
        }
        queue = driver.send(t.EVENTS_LOYALTY, event["customer_id"], event)
        while queue:  # the reserve and the decision travel as Kafka would carry them
            record = queue.pop(0)
            out.append(record)
            if record[0] in (t.EVENTS_LOYALTY, t.CAMPAIGN_BUDGETS):
                queue += driver.send(*record)
        driver.advance(60_000)
    decisions = [v for tp, _, v in out if tp == t.EVENTS_LOYALTY and v["kind"] == "BUDGET_DECISION"]
    notes = [v for tp, _, v in out if tp == t.NOTIFICATIONS and v["event"] == "CAMPAIGN_BUDGET_EXHAUSTED"]
    return [as_consumed(t.EVENTS_LOYALTY, v) for v in decisions], [
        as_consumed(t.NOTIFICATIONS, v) for v in notes
    ]


def as_consumed(topic: str, value: dict) -> dict:
    """The record as the sink decodes it off the topic (defaults filled in)."""
    schema = t.schema_for(topic)
    return decode(encode(schema, value), schema)
