"""POST /customers/{id}/points without Kafka: the adjust scope, the body rules, the ADJUST
command it produces (id, key, payload), ?wait=true and the audit entry."""

from __future__ import annotations

from unittest import mock

import pytest
from fastapi.testclient import TestClient

from schemas.ids import name_uuid
from tests.unit import test_ingest_api as api

KEYS = {"ik": frozenset({"ingest"}), "ak": frozenset({"admin"}), "adj": frozenset({"adjust"})}
H = {"X-API-Key": "adj"}
BODY = {"amount": 250, "reason": "late delivery", "reference": "ticket-9"}


@pytest.fixture
def h():
    with mock.patch.object(api, "KEYS", KEYS):
        harness = api.Harness(api_key_names={"adj": "support"})
    with TestClient(harness.app) as client:
        harness.client = client
        yield harness


def test_points_need_the_adjust_scope_which_admin_does_not_imply(h):
    assert h.client.post("/customers/c1/points", json=BODY).status_code == 401
    for key in ("ik", "ak"):
        resp = h.client.post("/customers/c1/points", json=BODY, headers={"X-API-Key": key})
        assert resp.status_code == 403 and "adjust" in resp.json()["error"]["message"]
    assert not h.producer.sent


def test_a_credit_is_an_adjust_command_with_the_event_id_rule_and_an_audit_entry(h):
    resp = h.client.post("/customers/c1/points", json=BODY, headers=H)
    assert resp.status_code == 202
    (topic, key, cmd), (audit_topic, audit_key, audit) = h.producer.sent
    assert (topic, key, cmd["kind"], cmd["type"]) == ("events.loyalty", "c1", "ADJUST", "ADJUSTMENT")
    assert cmd["id"] == name_uuid("c1:ticket-9") == resp.json()["data"]["id"]
    payload = api.json.loads(cmd["payload"])
    assert payload == {"amount": 250, "reward_id": "POINTS", "reason": "late delivery", "actor": "support"}
    assert (audit_topic, audit_key) == ("admin.audit", "c1")
    assert audit["actor"] == "support" and audit["action"] == "points.credit"
    assert audit["resource"] == "customers/c1/points" and audit["id"] == name_uuid(f"audit:{cmd['id']}")
    assert "250 POINTS: late delivery" in audit["summary"]


def test_a_retry_sends_the_same_command_and_the_same_audit_entry(h):
    for _ in range(3):
        resp = h.client.post("/customers/c1/points", json={**BODY, "amount": -5}, headers=H)
        assert resp.status_code == 202
    ids = {(t, r["id"]) for t, _, r in h.producer.sent}
    assert len(h.producer.sent) == 6 and len(ids) == 2
    assert {r["action"] for t, _, r in h.producer.sent if t == "admin.audit"} == {"points.debit"}


@pytest.mark.parametrize(
    "body, path",
    [
        ({**BODY, "amount": 0}, "amount"),
        ({**BODY, "amount": 1e12 + 1}, "amount"),
        ({**BODY, "amount": "5"}, "amount"),
        ({k: v for k, v in BODY.items() if k != "reason"}, "reason"),
        ({**BODY, "reason": "  "}, "reason"),
        ({k: v for k, v in BODY.items() if k != "reference"}, "reference"),
        ({**BODY, "reward_id": "NOPE"}, "reward_id"),
        ({**BODY, "extra": 1}, "extra"),
        ({**BODY, "reason": "a\u0000b"}, "reason"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(h, body, path):
    resp = h.client.post("/customers/c1/points", json=body, headers=H)
    assert resp.status_code == 422, resp.text
    assert path in {f["path"].split(".")[-1] for f in resp.json()["error"]["fields"]}
    assert not h.producer.sent


def test_wait_true_answers_with_the_processed_result(h):
    api.play_processor(h, points=250.0)
    resp = h.client.post("/customers/c1/points?wait=true", json=BODY, headers=H)
    assert resp.status_code == 200 and resp.json()["data"]["status"] == "RESOLVED"
    assert resp.json()["data"]["kind"] == "ADJUST" and resp.json()["data"]["points"] == 250.0


def test_kafka_down_is_503(h):
    h.producer.down = True
    resp = h.client.post("/customers/c1/points", json=BODY, headers=H)
    assert resp.status_code == 503 and "Retry-After" in resp.headers
