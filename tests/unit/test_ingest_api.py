"""Ingest HTTP API without Kafka: every status code a client can see, and what gets produced."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from ingest.app import create_app
from ingest.config import IngestConfig
from ingest.programs import StaticPrograms
from ingest.replies import ReplyHub
from schemas.program import Campaign, Program
from schemas.settings import Settings
from tests.support.ingest_fakes import PROGRAM, FakeLookup, FakeProducer

KEYS = {
    "ik": frozenset({"ingest"}),
    "ak": frozenset({"admin"}),
    "both": frozenset({"ingest", "admin"}),
}
H = {"X-API-Key": "ik"}


class Harness:
    def __init__(self, **config) -> None:
        self.producer = FakeProducer()
        self.lookup = FakeLookup()
        self.programs = StaticPrograms(PROGRAM)
        self.hub = ReplyHub()
        cfg = IngestConfig(api_keys=KEYS, **config)
        self.app = create_app(
            Settings(topic_prefix="test."),
            cfg,
            programs=self.programs,
            producer=self.producer,
            lookup=self.lookup,
            publisher=self.programs.publish,
            hub=self.hub,
            history=self.programs,
            audit=self.programs,
            instance_id="ingest-test",
        )


@pytest.fixture
def h():
    harness = Harness()
    with TestClient(harness.app) as client:
        harness.client = client
        yield harness


def purchase(**over):
    return {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": 10}, **over}


def error_of(resp):
    body = resp.json()
    assert set(body) == {"error"} and {"code", "message", "fields"} <= set(body["error"])
    return body["error"]


def test_single_event_is_acknowledged_and_produced(h):
    resp = h.client.post("/behavior/events", json=purchase(reference="o-1", tags=["a"]), headers=H)
    assert resp.status_code == 202
    body = resp.json()
    assert body["message"] == "Event enqueued for processing"
    data = body["data"]
    assert data["status"] == "PENDING" and data["customer_id"] == "c1" and data["type"] == "PURCHASE"
    assert data["queue"] == {"topic": "test.events.loyalty", "partition": 0, "offset": 0}
    assert data["id"] == str(uuid.uuid5(uuid.NAMESPACE_URL, "c1:o-1"))
    topic, key, record = h.producer.sent[0]
    assert (topic, key) == ("events.loyalty", "c1")
    assert record["id"] == data["id"] and record["path"] == "loyalty" and record["kind"] == "EVENT"
    assert json.loads(record["properties"]) == {"amount": 10}
    assert record["tags"] == ["a"] and record["reply_to"] is None
    assert abs(record["received_at"] - time.time() * 1000) < 60_000
    assert "X-RateLimit-Remaining" in resp.headers


def test_same_customer_and_reference_give_the_same_id(h):
    ids = [
        h.client.post("/behavior/events", json=purchase(customer_id=c, reference="r"), headers=H).json()[
            "data"
        ]["id"]
        for c in ("c1", "c1", "c2")
    ]
    assert ids[0] == ids[1] != ids[2]
    no_ref = {
        h.client.post("/behavior/events", json=purchase(), headers=H).json()["data"]["id"] for _ in range(2)
    }
    assert len(no_ref) == 2


def test_tracking_types_go_to_the_tracking_topic(h):
    resp = h.client.post("/behavior/events", json={"customer_id": "c1", "type": "PAGE_VIEW"}, headers=H)
    assert resp.status_code == 202
    topic, _, record = h.producer.sent[0]
    assert topic == "events.tracking" and record["path"] == "tracking"


def test_full_event_fields_are_carried(h):
    issued = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    body = purchase(
        issued_at=issued,
        brand_id="b1",
        fulfilled=False,
        reserve=3,
        redeem=[{"reward_id": "POINTS", "amount": 5}],
        referral_code="REF",
        coupon_code="CPN",
        metadata={"source": "pos"},
    )
    assert h.client.post("/behavior/events", json=body, headers=H).status_code == 202
    record = h.producer.sent[0][2]
    assert record["fulfilled"] is False and record["reserve"] == 3
    assert record["redeem"] == [{"reward_id": "POINTS", "amount": 5.0}]
    assert (record["referral_code"], record["coupon_code"], record["brand_id"]) == (
        "REF",
        "CPN",
        "b1",
    )
    assert json.loads(record["metadata"]) == {"source": "pos"}
    assert abs(record["issued_at"] - (time.time() - 3600) * 1000) < 60_000


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"type": "PURCHASE", "properties": {"amount": 1}}, "customer_id"),
        (purchase(properties={"amount": -1}), "properties.amount"),
        (purchase(properties={}), "properties"),
        (purchase(issued_at=(datetime.now(UTC) - timedelta(hours=73)).isoformat()), "issued_at"),
        (purchase(issued_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()), "issued_at"),
        (purchase(issued_at="yesterday"), "issued_at"),
        (purchase(redeem=[{"reward_id": "POINTS", "amount": 0}]), "redeem.0.amount"),
        (purchase(reserve=0), "reserve"),
        (purchase(unknown_field=1), "unknown_field"),
    ],
)
def test_invalid_events_get_422_with_the_field_path(h, body, path):
    resp = h.client.post("/behavior/events", json=body, headers=H)
    assert resp.status_code == 422
    err = error_of(resp)
    assert path in [f["path"] for f in err["fields"]], err
    assert h.producer.sent == []


def test_unknown_type_is_named(h):
    resp = h.client.post("/behavior/events", json=purchase(type="TELEPORT"), headers=H)
    assert resp.status_code == 422
    err = error_of(resp)
    assert err["code"] == "unknown_event_type" and "TELEPORT" in err["message"]
    assert err["fields"][0]["path"] == "type"


def test_malformed_json_is_400(h):
    headers = {**H, "Content-Type": "application/json"}
    resp = h.client.post("/behavior/events", content=b'{"customer_id": ', headers=headers)
    assert resp.status_code == 400
    assert error_of(resp)["code"] == "malformed_json"


def test_auth_401_and_403(h):
    assert h.client.post("/behavior/events", json=purchase()).status_code == 401
    bad = h.client.post("/behavior/events", json=purchase(), headers={"X-API-Key": "nope"})
    assert bad.status_code == 401 and error_of(bad)["code"] == "unauthorized"
    admin_only = h.client.post("/behavior/events", json=purchase(), headers={"X-API-Key": "ak"})
    assert admin_only.status_code == 403
    assert h.client.get("/admin/program", headers=H).status_code == 403
    bearer = {"Authorization": "Bearer both"}
    assert h.client.post("/behavior/events", json=purchase(), headers=bearer).status_code == 202
    assert h.client.get("/admin/program", headers=bearer).status_code == 200


def test_body_over_limit_is_413():
    harness = Harness(max_body_bytes=2000, max_bulk_body_bytes=5000)
    with TestClient(harness.app) as client:
        big = purchase(metadata={"x": "y" * 3000})
        resp = client.post("/behavior/events", json=big, headers=H)
        assert resp.status_code == 413 and error_of(resp)["code"] == "payload_too_large"
        assert client.post("/behavior/events/bulk", json={"events": [big]}, headers=H).status_code == 200
        huge = {"events": [big, big]}
        assert client.post("/behavior/events/bulk", json=huge, headers=H).status_code == 413
        assert harness.producer.sent[0][2]["customer_id"] == "c1"
        assert len(harness.producer.sent) == 1


def test_rate_limit_is_429_with_headers():
    harness = Harness(rate_limit_per_s=0.5, rate_limit_burst=2)
    with TestClient(harness.app) as client:
        codes = [client.post("/behavior/events", json=purchase(), headers=H) for _ in range(3)]
    assert [r.status_code for r in codes] == [202, 202, 429]
    limited = codes[2]
    assert error_of(limited)["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["X-RateLimit-Limit"] == "2"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert int(limited.headers["X-RateLimit-Reset"]) >= 1


def test_kafka_unavailable_is_503_with_retry_after(h):
    h.producer.down = True
    resp = h.client.post("/behavior/events", json=purchase(), headers=H)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    assert error_of(resp)["code"] == "unavailable"
    bulk = h.client.post("/behavior/events/bulk", json={"events": [purchase()]}, headers=H)
    assert bulk.status_code == 503 and "Retry-After" in bulk.headers


def test_bulk_reports_each_item(h):
    events = [purchase(reference="b0"), purchase(type="NOPE"), {"type": "PURCHASE"}, purchase()]
    resp = h.client.post("/behavior/events/bulk", json={"events": events}, headers=H)
    assert resp.status_code == 200
    body = resp.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    statuses = [(i["index"], i["status"]) for i in body["data"]]
    assert statuses == [(0, "accepted"), (1, "rejected"), (2, "rejected"), (3, "accepted")]
    assert body["data"][0]["id"] == str(uuid.uuid5(uuid.NAMESPACE_URL, "c1:b0"))
    assert body["data"][1]["errors"][0]["path"] == "type"
    assert body["data"][2]["errors"][0]["path"] == "customer_id"
    assert [s[2]["id"] for s in h.producer.sent] == [body["data"][0]["id"], body["data"][3]["id"]]


def test_bulk_over_1000_is_refused(h):
    resp = h.client.post("/behavior/events/bulk", json={"events": [purchase()] * 1001}, headers=H)
    assert resp.status_code == 422
    err = error_of(resp)
    assert err["code"] == "too_many_events" and "1000" in err["message"]
    assert h.producer.sent == []
    ok = h.client.post("/behavior/events/bulk", json={"events": [purchase()] * 1000}, headers=H)
    assert ok.json()["accepted"] == 1000


def play_processor(h, points=10.0):
    def on_send(record):
        if record["kind"] == "DRY_RUN":  # ?dry_run=true: the partition's reply
            h.app.state.ingest.dry_runs.hub.complete(record["id"], dry_run_reply(record, points))
        elif record["reply_to"]:
            detail = {
                "rules_applied": ["spend"],
                "rules_skipped": [{"campaign_id": "card", "reason": "punch recorded", "punches": 1, "of": 3}],
                "accumulations": [{"amount": points}],
                "redemptions": [],
                "tier": None,
                "event": {},
                "duplicate": False,
            }
            h.hub.complete(
                record["id"],
                {
                    "event_id": record["id"],
                    "customer_id": record["customer_id"],
                    "type": record["type"],
                    "kind": record["kind"],
                    "status": "RESOLVED",
                    "reason": None,
                    "points": points,
                    "config_version": 3,
                    "processed_at": 1,
                    "reply_to": record["reply_to"],
                    "detail": json.dumps(detail),
                    "wallet": {"points": points},
                },
            )

    h.producer.on_send = on_send


def dry_run_reply(command, points):
    """What the loyalty processor answers a DRY_RUN (processors/loyalty/dry_run.py), in short."""
    event = json.loads(command["payload"])["event"]
    result = {"event_id": event["id"], "customer_id": event["customer_id"], "type": event["type"],
              "kind": event["kind"], "status": "RESOLVED", "reason": None, "points": points,
              "detail": json.dumps({"rules_applied": [], "accumulations": [], "redemptions": []}),
              "wallet": {"points": points}}  # fmt: skip
    return {"request_id": command["id"], "reply_to": command["reply_to"], "customer_id": event["customer_id"],
            "event_id": event["id"], "partition": 0, "program_version": 3, "processed_at": 1, "found": False,
            "already_processed": False, "tier": {"before": None, "after": None}, "results": [result],
            "notifications": [], "budgets": [], "pending": []}  # fmt: skip


def test_sync_wait_returns_the_processed_result(h):
    play_processor(h)
    resp = h.client.post("/behavior/events?wait=true", json=purchase(), headers=H)
    assert resp.status_code == 200
    data = resp.json()["data"]
    assert data["status"] == "RESOLVED" and data["points"] == 10.0
    assert data["rules_applied"] == ["spend"] and data["wallet"] == {"points": 10.0}
    assert data["rules_skipped"] == [
        {"campaign_id": "card", "reason": "punch recorded", "punches": 1, "of": 3}
    ]
    assert "event" not in data  # the echo of what was sent is left out
    assert h.producer.sent[0][2]["reply_to"] == "ingest-test"


def test_sync_wait_times_out_with_202(h):
    started = time.monotonic()
    resp = h.client.post("/behavior/events?wait=true&timeout=0.2", json=purchase(), headers=H)
    assert resp.status_code == 202 and resp.json()["data"]["status"] == "PENDING"
    assert time.monotonic() - started < 2


def test_commands_are_routed_by_the_events_customer(h):
    h.lookup.events["e1"] = {"id": "e1", "customer_id": "c9", "type": "PURCHASE"}
    resp = h.client.patch("/behavior/events/e1/fulfill", headers=H)
    assert resp.status_code == 202
    _, key, record = h.producer.sent[-1]
    assert key == "c9" and record["kind"] == "FULFILL" and record["target_event_id"] == "e1"
    resp = h.client.post("/behavior/events/e1/reverse", json={"reason": "refund"}, headers=H)
    assert resp.status_code == 202
    record = h.producer.sent[-1][2]
    assert record["kind"] == "REVERSE" and json.loads(record["payload"]) == {"reason": "refund"}
    again = h.client.post("/behavior/events/e1/reverse", json={"reason": "refund"}, headers=H)
    assert again.json()["data"]["id"] == resp.json()["data"]["id"]
    assert h.client.post("/behavior/events/nope/cancel", headers=H).status_code == 404
    direct = h.client.post("/behavior/events/nope/cancel", json={"customer_id": "c2"}, headers=H)
    assert direct.status_code == 202 and h.producer.sent[-1][1] == "c2"
    assert h.producer.sent[-1][2]["kind"] == "CANCEL"


def test_get_event_and_wallet(h):
    h.lookup.events["e1"] = {"id": "e1", "customer_id": "c1", "status": "RESOLVED", "points": 5}
    h.lookup.wallets["c1"] = {"customer_id": "c1", "points": 5}
    assert h.client.get("/behavior/events/e1", headers=H).json()["data"]["status"] == "RESOLVED"
    assert h.client.get("/behavior/events/e2", headers=H).status_code == 404
    assert h.client.get("/customers/c1/wallet", headers=H).json()["data"]["points"] == 5
    assert h.client.get("/customers/c2/wallet", headers=H).status_code == 404
    h.lookup.down = True
    down = h.client.get("/customers/c1/wallet", headers=H)
    assert down.status_code == 503 and "Retry-After" in down.headers


def test_customer_commands(h):
    body = {"customer_id": "c5", "migrated": True, "customer": {"email": "a@b.c"}}
    assert h.client.post("/customers", json=body, headers=H).status_code == 202
    _, key, record = h.producer.sent[-1]
    assert key == "c5" and (record["kind"], record["type"]) == ("REGISTER", "REGISTRATION")
    payload = json.loads(record["payload"])
    assert payload == {"migrated": True, "anonymous": False, "customer": {"email": "a@b.c"}}
    assert record["referral_code"] is None
    consent = {"purposes": {"behavioral_campaigns": False, "email_marketing": True}}
    assert h.client.patch("/customers/c5/consent", json=consent, headers=H).status_code == 202
    record = h.producer.sent[-1][2]
    assert record["kind"] == "CONSENT"
    assert json.loads(record["payload"])["purposes"] == consent["purposes"]
    bad = h.client.patch("/customers/c5/consent", json={"purposes": {"spam": True}}, headers=H)
    assert bad.status_code == 422 and error_of(bad)["fields"][0]["path"] == "purposes.spam"
    assert h.client.patch("/customers/c5/identify", headers=H).status_code == 202
    assert h.producer.sent[-1][2]["kind"] == "IDENTIFY"


def full_program(**sections) -> dict:
    """A complete PUT body: the default program with `sections` replaced."""
    return {**Program().model_dump(mode="json", by_alias=True, exclude={"version"}), **sections}


def test_admin_program_roundtrip(h):
    admin = {"X-API-Key": "ak", "If-Match": "*"}
    current = h.client.get("/admin/program", headers=admin).json()["data"]
    assert current["version"] == 3
    new = full_program(event_types=[{"name": "APP_OPEN", "path": "tracking"}])
    resp = h.client.put("/admin/program", json=new, headers=admin)
    assert resp.status_code == 200 and resp.json()["data"]["version"] == 4
    event = {"customer_id": "c1", "type": "APP_OPEN"}
    assert h.client.post("/behavior/events", json=event, headers=H).status_code == 202
    bad = h.client.put("/admin/program", json=full_program(event_types=[{"name": "lower"}]), headers=admin)
    assert bad.status_code == 422 and error_of(bad)["fields"][0]["path"].startswith("event_types.0")
    bad_schema = full_program(event_types=[{"name": "X", "schema": {"type": 5}}])
    assert h.client.put("/admin/program", json=bad_schema, headers=admin).status_code == 422
    bad_rule = full_program(campaigns=[{"id": "c1", "condition": "properties.amount >", "formula": "1"}])
    resp = h.client.put("/admin/program", json=bad_rule, headers=admin)
    assert resp.status_code == 422 and "campaign c1 condition" in error_of(resp)["fields"][0]["reason"]


def test_admin_put_of_a_partial_program_is_refused_and_keeps_the_program(h):
    """The docs' old example (only event_types) replaced the whole program: 0 campaigns."""
    admin = {"X-API-Key": "ak", "If-Match": "*"}
    h.programs.program = PROGRAM.model_copy(update={"campaigns": [Campaign(id="spend", formula="1")]})
    partial = {"event_types": [{"name": "APP_OPEN", "path": "tracking"}]}
    resp = h.client.put("/admin/program", json=partial, headers=admin)
    assert resp.status_code == 422
    err = error_of(resp)
    missing = {f["path"] for f in err["fields"]}
    assert {"campaigns", "webhooks", "rewards", "tiers", "audiences", "journeys"} <= missing
    assert not missing & {"event_types", "version", "name", "delivery", "retention"}
    assert "campaigns" in err["message"]
    assert [c.id for c in h.programs.current().campaigns] == ["spend"]  # nothing published
    empty_lists = full_program(campaigns=[], webhooks=[])  # present but empty is a choice
    assert h.client.put("/admin/program", json=empty_lists, headers=admin).status_code == 200
    assert h.programs.current().campaigns == []
    content_only = {k: v for k, v in full_program().items() if k not in ("delivery", "retention", "rfm")}
    assert h.client.put("/admin/program", json=content_only, headers=admin).status_code == 200  # defaults


def test_admin_put_refuses_lax_types(h):
    admin = {"X-API-Key": "ak", "If-Match": "*"}
    body = full_program(tiers={"levels": [], "reporting_period_days": "365"})
    resp = h.client.put("/admin/program", json=body, headers=admin)
    assert resp.status_code == 422 and error_of(resp)["fields"][0]["path"] == "tiers.reporting_period_days"


def test_ops_endpoints(h):
    health = h.client.get("/healthz").json()
    assert health == {"status": "ok", "instance_id": "ingest-test", "pid": os.getpid()}
    metrics = h.client.get("/metrics").text
    assert "ingest_requests_total" in metrics
    spec = h.client.get("/openapi.json").json()
    assert "/behavior/events" in spec["paths"]
    assert set(spec["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}
    assert "EventIn" in spec["components"]["schemas"]
    assert h.client.get("/docs").status_code == 200


def test_invalid_unicode_is_a_client_error_not_500(h):
    raw = b'{"customer_id": "\\ud800", "type": "PURCHASE", "reference": "\\udfff"}'
    headers = {**H, "Content-Type": "application/json"}
    assert h.client.post("/behavior/events", content=raw, headers=headers).status_code == 400
    bulk = b'{"events": [' + raw + b"]}"
    assert h.client.post("/behavior/events/bulk", content=bulk, headers=headers).status_code == 400
    customer = b'{"customer_id": "\\ud800"}'  # parsed by the framework, refused when encoding
    assert h.client.post("/customers", content=customer, headers=headers).status_code == 422


def test_registration_carries_the_referral_code_as_a_registration_event_does(h):
    """POST /customers refused referral_code (422); it goes where a REGISTRATION event's goes."""
    body = {"customer_id": "c6", "referral_code": "ANA-1", "customer": {"email": "b@c.d"}}
    resp = h.client.post("/customers", json=body, headers=H)
    assert resp.status_code == 202, resp.text
    register = h.producer.sent[-1][2]
    event = {"customer_id": "c6", "type": "REGISTRATION", "referral_code": "ANA-1"}
    assert h.client.post("/behavior/events", json=event, headers=H).status_code == 202
    as_event = h.producer.sent[-1][2]
    assert (register["kind"], register["type"]) == ("REGISTER", "REGISTRATION")
    assert register["referral_code"] == as_event["referral_code"] == "ANA-1"
    assert "referral_code" not in json.loads(register["payload"])["customer"]


def test_405_names_every_method_of_the_path(h):
    """Starlette's Allow listed only the first matching route: GET, not PUT, on /admin/program."""
    resp = h.client.delete("/admin/program", headers={"X-API-Key": "ak"})
    assert resp.status_code == 405 and error_of(resp)["code"] == "method_not_allowed"
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "HEAD", "PUT", "PATCH"}


def test_spec_timeout_bound_is_the_servers(h):
    spec = h.client.get("/openapi.json").json()
    params = spec["paths"]["/behavior/events"]["post"]["parameters"]
    timeout = next(p for p in params if p["name"] == "timeout")["schema"]
    bound = timeout.get("maximum") or timeout["anyOf"][0]["maximum"]
    assert bound == h.app.state.ingest.config.max_wait_timeout_s == 30
    over = h.client.post("/behavior/events?wait=true&timeout=299", json=purchase(), headers=H)
    assert over.status_code == 422 and error_of(over)["fields"][0]["path"] == "timeout"


def test_a_malformed_authorization_header_is_401_even_with_an_api_key(h):
    headers = {**H, "Authorization": "Basic abc"}
    resp = h.client.post("/behavior/events", json=purchase(), headers=headers)
    assert resp.status_code == 401 and h.producer.sent == []
