"""Contract: the profiles the loyalty processor emits drive audiences, and their membership
drives journeys (three processors chained in memory, no Kafka)."""

from __future__ import annotations

import json

from processors.audiences.processor import build as audiences
from processors.journeys.processor import build as journeys
from processors.loyalty.processor import build as loyalty
from processors.runtime.testing import TestDriver
from schemas.program import Audience, Campaign, Journey, Program
from schemas.topics import AUDIENCES_MEMBERSHIP, EVENTS_LOYALTY, JOURNEYS_ACTIVITY, PROFILES_CHANGES

NOW = 1_700_000_000_000
DAY = 24 * 3600 * 1000

PROGRAM = Program(
    version=1,
    campaigns=[Campaign(id="points", formula="properties.amount")],
    audiences=[
        Audience(id="purchasers", condition="profile.purchase_count > 0"),
        Audience(id="big", condition="profile.total_spend >= 100 && profile.points >= 100"),
        Audience(id="at_risk", condition="profile.days_since_last_event >= 30"),
    ],
    journeys=[
        Journey.model_validate(
            {
                "id": "winback",
                "entry_audience": "at_risk",
                "nodes": [
                    {"id": "start", "kind": "start"},
                    {"id": "mail", "kind": "action", "action": "email", "template": "miss_you"},
                ],
                "edges": [{"from": "start", "to": "mail", "condition": "profile.purchase_count >= 1"}],
            }
        )
    ],
)


def forward(source: list, topic: str, target: TestDriver) -> list:
    out = []
    for t, key, value in source:
        if t == topic:
            out.extend(target.send(topic, key, value))
    return out


def test_loyalty_profiles_drive_audiences_and_journeys() -> None:
    engine = TestDriver(loyalty(), PROGRAM, now=NOW)
    members = TestDriver(audiences(), PROGRAM, now=NOW)
    flows = TestDriver(journeys(), PROGRAM, now=NOW + 30 * DAY)
    purchase = {
        "id": "e1",
        "customer_id": "c1",
        "type": "PURCHASE",
        "issued_at": NOW,
        "received_at": NOW,
        "properties": json.dumps({"amount": 150}),
    }
    profiles = [r for r in engine.send(EVENTS_LOYALTY, "c1", purchase) if r[0] == PROFILES_CHANGES]
    assert profiles, "the loyalty processor emits the customer's profile"
    forward(profiles, PROFILES_CHANGES, flows)
    entered = forward(profiles, PROFILES_CHANGES, members)
    assert sorted(v["audience_id"] for _, _, v in entered) == ["big", "purchasers"]
    at_risk = members.advance(30 * DAY)  # no event for 30 days
    assert [(v["audience_id"], v["action"]) for _, _, v in at_risk] == [("at_risk", "ENTER")]
    activity = forward(at_risk, AUDIENCES_MEMBERSHIP, flows)
    assert [v["action"] for t, _, v in activity if t == JOURNEYS_ACTIVITY and v["kind"] == "ACTION"] == [
        "email"
    ]
