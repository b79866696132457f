"""POST /behavior/events?dry_run=true through HTTP: the real loyalty engine runs the event from the
customer's stored state (a fake PostgreSQL here; tests/integration/test_event_dry_run_pg.py has
the real one) and answers what it would produce, while nothing is produced or stored."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from schemas.program import Program
from tests.support.ingest_fakes import PROGRAM
from tests.unit.test_ingest_api import H, Harness, error_of, purchase

TIERS = {
    "levels": [
        {"id": "bronze", "name": "Bronze", "level": 0},
        {"id": "gold", "name": "Gold", "level": 1, "entry": "profile.lifetime_points >= 100"},
    ]
}
CAMPAIGNS = [
    {"id": "spend", "condition": "properties.amount > 0", "formula": "properties.amount"},
    {"id": "big", "condition": "properties.amount >= 1000", "formula": "500"},
    {"id": "first", "condition": "true", "formula": "5", "per_customer_limit": 1},
]
DRY = "/behavior/events?dry_run=true"


@pytest.fixture
def h():
    harness = Harness()
    body = {**PROGRAM.model_dump(exclude_none=True), "campaigns": CAMPAIGNS, "tiers": TIERS}
    harness.programs.program = Program.model_validate(body)
    with TestClient(harness.app) as client:
        harness.client = client
        yield harness


def stored_customer(h, lifetime: float, uses: list[tuple[str, str]] = ()) -> None:
    """c1 as the sink stored them: bronze, `lifetime` points open in one line."""
    now = int(time.time() * 1000)
    line = {"id": "old:ACCUMULATION:0", "amount": lifetime, "reward_id": "POINTS", "campaign_id": "spend",
            "rule": None, "event_id": "old", "issued_at": now - 86_400_000, "expiration_date": None,
            "kind": "ACCUMULATION"}  # fmt: skip
    h.lookup.states["c1"] = {
        "profile": {
            "customer_id": "c1",
            "tier": "bronze",
            "purchase_count": 3,
            "total_spend": lifetime,
            "event_count": 3,
            "events_by_type": {"PURCHASE": 3},
            "lifetime_points": lifetime,
            "consent": {},
            "badges": [],
        },  # fmt: skip
        "wallet": {"customer_id": "c1", "points": lifetime, "lifetime": lifetime, "tier": "bronze"},
        "lines": [line],
        "uses": list(uses),
    }


def dry_run(h, body: dict, status: int = 200) -> dict:
    resp = h.client.post(DRY, json=body, headers=H)
    assert resp.status_code == status, resp.text
    return resp.json()


def test_dry_run_answers_from_the_stored_state_and_sends_nothing(h):
    stored_customer(h, 90.0, uses=[("2026-11-30T10:00:00+00:00", "first")])
    body = dry_run(h, purchase(properties={"amount": 20}))
    assert body["dry_run"] is True
    data = body["data"]
    assert (data["status"], data["points"], data["customer_id"]) == ("RESOLVED", 20.0, "c1")
    assert [r["campaign_id"] for r in data["rules_applied"]] == ["spend"]
    skipped = {r["campaign_id"]: r["reason"] for r in data["rules_skipped"]}
    assert skipped == {"big": "condition not met", "first": "per-customer limit of 1 reached"}
    assert data["tier"]["before"]["id"] == "bronze" and data["tier"]["after"]["id"] == "gold"
    assert data["wallet"]["points"] == 110.0  # the stored 90 plus the 20 it would earn
    events = [n["event"] for n in data["notifications"]]
    assert "CUSTOMER_ACCUMULATION" in events and "TIER_UPGRADE" in events
    assert data["state"]["found"] is True and "in flight" in data["state"]["note"]
    assert data["state"]["already_processed"] is False
    assert h.producer.sent == []  # nothing published: no event, no result, no webhook


def test_a_customer_postgresql_does_not_know_starts_new(h):
    data = dry_run(h, purchase(customer_id="newbie", properties={"amount": 30}))["data"]
    assert data["state"]["found"] is False
    assert data["points"] == 35.0  # spend 30 + first 5: the limit is not reached yet
    assert data["tier"]["before"] is None and data["tier"]["after"]["id"] == "bronze"
    assert data["wallet"]["points"] == 35.0


def test_dry_run_does_not_change_what_it_reads(h):
    stored_customer(h, 90.0)
    before = repr(h.lookup.states)
    first = dry_run(h, purchase(properties={"amount": 20}))["data"]
    again = dry_run(h, purchase(properties={"amount": 20}))["data"]
    assert repr(h.lookup.states) == before
    assert (first["points"], first["wallet"]) == (again["points"], again["wallet"])


def test_validation_errors_are_the_real_endpoints_422(h):
    bad = [
        {"customer_id": "c1", "type": "NOPE", "properties": {}},
        {"customer_id": "c1", "type": "PURCHASE", "properties": {}},
        {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": -1}},
        {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": 1}, "issued_at": "yesterday"},
        {"type": "PURCHASE", "properties": {"amount": 1}},
    ]
    for body in bad:
        real = h.client.post("/behavior/events", json=body, headers=H)
        dry = h.client.post(DRY, json=body, headers=H)
        assert real.status_code == dry.status_code == 422, (body, dry.text)
        assert error_of(dry) == error_of(real)
    json_headers = {**H, "Content-Type": "application/json"}
    real = h.client.post("/behavior/events", content=b"{not json", headers=json_headers)
    dry = h.client.post(DRY, content=b"{not json", headers=json_headers)
    assert dry.status_code == real.status_code == 400 and error_of(dry) == error_of(real)
    assert h.producer.sent == []


def test_tracking_event_and_an_already_processed_one(h):
    data = dry_run(h, {"customer_id": "c1", "type": "PAGE_VIEW"})["data"]
    assert data["tracking_only"] is True and data["results"] == []
    stored_customer(h, 10.0)
    first = dry_run(h, purchase(reference="order-7", properties={"amount": 5}))["data"]
    h.lookup.events[first["event_id"]] = {"id": first["event_id"], "customer_id": "c1"}
    again = dry_run(h, purchase(reference="order-7", properties={"amount": 5}))["data"]
    assert again["event_id"] == first["event_id"] and again["state"]["already_processed"] is True


def test_store_down_is_503_and_auth_is_the_endpoints(h):
    h.lookup.down = True
    resp = h.client.post(DRY, json=purchase(), headers=H)
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert h.client.post(DRY, json=purchase()).status_code == 401
