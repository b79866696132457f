"""POST /behavior/events?dry_run=true through HTTP: ingest validates the event as a real send,
publishes one DRY_RUN command keyed by the customer and answers with the loyalty processor's
reply. Here the real LoyaltyProcessor on the in-memory driver plays the customer's partition
(tests/integration/test_event_dry_run_kafka.py has the real broker, processor and sink)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.testing import TestDriver
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
REPLIES = "loyalty.dry_run.replies"


class Partition:
    """The loyalty processor owning the customers: answers each DRY_RUN ingest sends, on the
    hub its reply listener would complete."""

    def __init__(self, h: Harness, program: Program) -> None:
        self.driver = TestDriver(LoyaltyProcessor(1), program, now=1_790_000_000_000)
        self.h = h
        h.producer.on_send = self.receive

    def receive(self, record: dict) -> None:
        if record.get("kind") != "DRY_RUN":
            return
        self.driver.clock.advance(max(0, record["received_at"] - self.driver.clock.now_ms()))
        for topic, key, reply in self.driver.send("events.loyalty", record["customer_id"], record):
            assert topic == REPLIES and key == record["id"]  # nothing else is emitted
            self.h.app.state.ingest.dry_runs.hub.complete(key, reply)

    def stores(self) -> dict:
        return {name: dict(s.range()) for name, s in self.driver.tasks[0].stores.items()}


@pytest.fixture
def h():
    harness = Harness()
    body = {**PROGRAM.model_dump(exclude_none=True), "campaigns": CAMPAIGNS, "tiers": TIERS}
    harness.programs.program = Program.model_validate(body)
    with TestClient(harness.app) as client:
        harness.client = client
        assert harness.app.state.ingest.dry_runs.listen is False  # a test producer: no Kafka
        yield harness


def dry_run(h, body: dict, status: int = 200, query: str = "") -> dict:
    resp = h.client.post(DRY + query, json=body, headers=H)
    assert resp.status_code == status, resp.text
    return resp.json()


def test_dry_run_is_answered_by_the_customers_partition_from_its_state(h):
    partition = Partition(h, h.programs.program)
    earlier = {"id": "e0", "customer_id": "c1", "type": "PURCHASE", "issued_at": 1_790_000_000_000,
               "received_at": 1_790_000_000_000, "properties": '{"amount": 90}'}  # fmt: skip
    partition.driver.send("events.loyalty", "c1", earlier)  # 90 + first 5: bronze, 95 points
    before = partition.stores()
    body = dry_run(h, purchase(properties={"amount": 20}))
    assert body["dry_run"] is True
    data = body["data"]
    assert (data["status"], data["points"], data["customer_id"]) == ("RESOLVED", 20.0, "c1")
    assert [r["campaign_id"] for r in data["rules_applied"]] == ["spend"]
    skipped = {r["campaign_id"]: r["reason"] for r in data["rules_skipped"]}
    assert skipped == {"big": "condition not met", "first": "per-customer limit of 1 reached"}
    assert data["tier"]["before"]["id"] == "bronze" and data["tier"]["after"]["id"] == "gold"
    assert data["wallet"]["points"] == 115.0  # the 95 it has plus the 20 it would earn
    assert [n["event"] for n in data["notifications"]] == ["CUSTOMER_ACCUMULATION", "TIER_UPGRADE"]
    assert data["state"] == {"found": True, "already_processed": False, "partition": 0}
    assert data["program_version"] == h.programs.program.version
    assert partition.stores() == before  # the partition changed nothing
    ((topic, key, command),) = h.producer.sent  # only the question was sent
    assert (topic, key, command["kind"]) == ("events.loyalty", "c1", "DRY_RUN")


def test_a_customer_the_partition_does_not_know_starts_new(h):
    Partition(h, h.programs.program)
    data = dry_run(h, purchase(customer_id="newbie", properties={"amount": 30}))["data"]
    assert data["state"]["found"] is False
    assert data["points"] == 35.0  # spend 30 + first 5: the limit is not reached yet
    assert data["tier"]["before"] is None and data["tier"]["after"]["id"] == "bronze"


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
    dry = h.client.post(DRY + "&timeout=0", json=purchase(), headers=H)
    assert dry.status_code == 422 and error_of(dry)["fields"][0]["path"] == "timeout"
    assert h.producer.sent == []


def test_tracking_event_is_answered_without_asking(h):
    data = dry_run(h, {"customer_id": "c1", "type": "PAGE_VIEW"})["data"]
    assert data["tracking_only"] is True and data["results"] == []
    assert h.producer.sent == []


def test_no_answer_in_time_is_504_and_kafka_down_503(h):
    resp = h.client.post(DRY + "&timeout=0.2", json=purchase(), headers=H)  # nobody answers
    assert resp.status_code == 504
    assert "no answer from the loyalty processor within 0.2 s" in error_of(resp)["message"]
    assert h.app.state.ingest.dry_runs.hub._waiting == {}  # the request's future is gone
    h.producer.down = True
    resp = h.client.post(DRY, json=purchase(), headers=H)
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert h.client.post(DRY, json=purchase()).status_code == 401


def test_a_dry_run_the_processor_failed_is_500_naming_the_error(h, monkeypatch):
    partition = Partition(h, h.programs.program)

    def broken(ctx, event):
        raise RuntimeError("boom")

    monkeypatch.setattr(partition.driver.processor, "_event", broken)
    resp = h.client.post(DRY, json=purchase(), headers=H)
    assert resp.status_code == 500
    assert error_of(resp)["message"] == "dry run failed in the loyalty processor: RuntimeError: boom"
