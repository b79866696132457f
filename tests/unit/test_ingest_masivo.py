"""Masivo drop-in (issue 16): the storefront base path, Masivo's event body shapes and
POST /coupons/redeem, against the ingest app with fakes (no Kafka)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.app import STOREFRONT_PREFIX
from ingest.customer_history import customer_object
from schemas.program import load_program
from sinks.mapping import Source, event_rows
from tests.unit.test_ingest_api import Harness, play_processor

BEARER = {"Authorization": "Bearer ik"}
PREFIXES = ("", STOREFRONT_PREFIX)


@pytest.fixture
def h():
    harness = Harness()
    with TestClient(harness.app) as client:
        harness.client = client
        yield harness


@pytest.mark.parametrize("prefix", PREFIXES)
def test_event_and_wallet_under_both_base_paths(h, prefix):
    """A Masivo integration changes only its base URL (and sends a Bearer token)."""
    body = {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": 10}}
    resp = h.client.post(f"{prefix}/behavior/events", json=body, headers=BEARER)
    assert resp.status_code == 202, resp.text
    assert h.producer.sent[-1][2]["id"] == resp.json()["data"]["id"]
    h.lookup.wallets["c1"] = {"customer_id": "c1", "points": 5}
    wallet = h.client.get(f"{prefix}/customers/c1/wallet", headers=BEARER)
    assert wallet.status_code == 200 and wallet.json()["data"]["points"] == 5


def test_wait_under_the_storefront_path(h):
    play_processor(h)
    body = {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": 10}}
    resp = h.client.post(f"{STOREFRONT_PREFIX}/behavior/events?wait=true", json=body, headers=BEARER)
    assert resp.status_code == 200 and resp.json()["data"]["status"] == "RESOLVED"


def test_storefront_needs_the_same_auth(h):
    resp = h.client.get(f"{STOREFRONT_PREFIX}/customers/c1/wallet")
    assert resp.status_code == 401
    assert h.client.get(f"{STOREFRONT_PREFIX}/admin/program", headers=BEARER).status_code == 404


def test_openapi_lists_both_base_paths(h):
    paths = h.client.get("/openapi.json").json()["paths"]
    for path in ("/behavior/events", "/customers/{customer_id}/wallet", "/behavior/events/{event_id}"):
        assert path in paths and f"{STOREFRONT_PREFIX}{path}" in paths
        assert paths[f"{STOREFRONT_PREFIX}{path}"].keys() == paths[path].keys()
    assert not any(p.startswith(f"{STOREFRONT_PREFIX}/admin") for p in paths)
    op = paths[f"{STOREFRONT_PREFIX}/behavior/events"]["post"]
    assert op["security"] and op["requestBody"]["content"]["application/json"]["schema"]


# -- Masivo's event body shapes (item 1) -----------------------------------------------------
CONTRACTS = Path(__file__).parents[1] / "contracts" / "masivo"
EXAMPLE = load_program(Path(__file__).parents[2] / "examples" / "program.yaml")


@pytest.fixture
def shop():
    """The ingest app on the example program (the one the contract bodies are written for)."""
    harness = Harness()
    harness.programs.program = EXAMPLE.model_copy(update={"version": 3})
    with TestClient(harness.app) as client:
        harness.client = client
        yield harness


def contract(name: str) -> dict:
    return json.loads((CONTRACTS / name).read_text())


@pytest.mark.parametrize("name", sorted(p.name for p in CONTRACTS.glob("event_*.json")))
@pytest.mark.parametrize("prefix", PREFIXES)
def test_each_masivo_event_body_is_accepted_verbatim(shop, name, prefix):
    body = contract(name)
    resp = shop.client.post(f"{prefix}/behavior/events", json=body, headers=BEARER)
    assert resp.status_code == 202, resp.text
    record = shop.producer.sent[-1][2]
    stored = json.loads(record["properties"])
    for key in ("platform", "order", "product"):
        assert (key in stored) == (key in body)
    if "order" in body:
        assert stored["amount"] == body["order"]["value"]  # campaigns earn on it
        skus = [p["sku"] for p in body["order"]["products"]]
        assert [p["sku"] for p in stored["order"]["products"]] == skus
    wanted = [{"reward_id": r["id"], "amount": r["amount"]} for r in body.get("redeem", [])]
    assert record["redeem"] == wanted


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"order": {"value": "250"}}, "order.value"),
        ({"order": {"value": -1}}, "order.value"),
        ({"order": {"value": 1, "payment_method": "CASH"}}, "order.payment_method"),
        ({"order": {"value": 1, "products": [{"amount": 1}]}}, "order.products.0.sku"),
        ({"order": {"value": 1, "shipping": {"value": 1, "cost": 2}}}, "order.shipping.cost"),
        ({"product": {"sku": "A", "amount": 0}}, "product.amount"),
        ({"redeem": [{"amount": 1}]}, "redeem.0"),
        ({"redeem": [{"id": "POINTS", "reward_id": "POINTS", "amount": 1}]}, "redeem.0"),
        ({"platform": 7}, "platform"),
        ({"order": {"value": 1}, "properties": {"amount": 1, "order": {}}}, "order"),
    ],
)
def test_a_bad_masivo_field_is_a_422_naming_it(shop, change, path):
    body = {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": 1}, **change}
    resp = shop.client.post("/behavior/events", json=body, headers=BEARER)
    assert resp.status_code == 422, resp.text
    assert path in [f["path"] for f in resp.json()["error"]["fields"]]


def test_openapi_documents_order_product_and_both_redeem_ids(h):
    schemas = h.client.get("/openapi.json").json()["components"]["schemas"]
    assert {"order", "product", "platform"} <= set(schemas["EventIn"]["properties"])
    assert {"purchase_id", "products", "shipping", "payment_method"} <= set(schemas["Order"]["properties"])
    assert {"reward_id", "id"} <= set(schemas["RedeemItem"]["properties"])


def test_the_sink_stores_order_and_product_in_the_events_row(shop):
    for name in ("event_purchase_order.json", "event_add_to_cart.json"):
        shop.client.post("/behavior/events", json=contract(name), headers=BEARER)
    for topic, _, record in shop.producer.sent[-2:]:
        ((table, row),) = event_rows(record, Source(topic))
        stored = json.loads(row["properties"])
        assert table == "events_from_event" and ("order" in stored or "product" in stored)


# -- POST /coupons/redeem (item 5) ---------------------------------------------------------------
@pytest.mark.parametrize("prefix", PREFIXES)
def test_coupon_redeem_is_a_coupon_use_event_with_the_code(shop, prefix):
    resp = shop.client.post(f"{prefix}/coupons/redeem", json=contract("coupon_redeem.json"), headers=BEARER)
    assert resp.status_code == 202, resp.text
    data = resp.json()["data"]
    topic, key, record = shop.producer.sent[-1]
    assert (topic, key, record["id"]) == ("events.loyalty", "masivo-ann", data["id"])
    assert (record["type"], record["coupon_code"]) == ("COUPON_USE", "SUMMER24")
    assert record["brand_id"] == "brand-1"
    assert json.loads(record["metadata"]) == {"store_id": "store-7", "channel_id": "online"}
    assert json.loads(record["properties"]) == {"platform": "APP"}


def test_coupon_redeem_waits_for_the_result(shop):
    play_processor(shop)
    body = {"customer_id": "ann", "code": "GOLDEN-1", "reference": "r-1"}
    resp = shop.client.post("/coupons/redeem?wait=true", json=body, headers=BEARER)
    assert resp.status_code == 200 and resp.json()["data"]["status"] == "RESOLVED"
    again = shop.client.post("/coupons/redeem", json=body, headers=BEARER)
    assert again.json()["data"]["id"] == resp.json()["data"]["id"]  # a retry is one event


@pytest.mark.parametrize(
    ("body", "status", "path"),
    [
        ({"customer_id": "ann", "code": "NOPE"}, 404, None),
        ({"customer_id": "ann"}, 422, "code"),
        ({"customer_id": "ann", "code": ""}, 422, "code"),
        ({"customer_id": "ann", "code": "SUMMER24", "store": "x"}, 422, "store"),
    ],
)
def test_coupon_redeem_refusals(shop, body, status, path):
    resp = shop.client.post("/coupons/redeem", json=body, headers=BEARER)
    assert resp.status_code == status, resp.text
    if path:
        assert path in [f["path"] for f in resp.json()["error"]["fields"]]


def test_coupon_redeem_needs_coupon_use_in_the_program(h):
    """The fakes' program has no COUPON_USE campaign: nothing would redeem the code."""
    resp = h.client.post("/coupons/redeem", json={"customer_id": "a", "code": "SUMMER24"}, headers=BEARER)
    assert resp.status_code == 404


# -- Masivo's reply fields (item 2, the part ingest can answer) -------------------------------
TIMES = ("processing_at", "resolved_at", "cancelled_at", "expired_at", "reversed_at")


def test_wait_answer_has_masivo_times_and_rewarding_campaigns(h):
    play_processor(h)
    body = {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": 10}}
    data = h.client.post("/behavior/events?wait=true", json=body, headers=BEARER).json()["data"]
    at = "1970-01-01T00:00:00.001000+00:00"  # the fake's processed_at = 1 ms
    assert {k: data[k] for k in TIMES} == {
        "processing_at": at, "resolved_at": at, "cancelled_at": None, "expired_at": None, "reversed_at": None,
    }  # fmt: skip
    assert data["rewarding_campaigns"] == ["spend"]


@pytest.mark.parametrize(
    ("status", "processed", "wanted"),
    [
        ("PENDING", None, {}),  # not processed yet: every time null
        ("PENDING", "T", {"processing_at": "T"}),  # an open reservation
        ("RESOLVED", "T", {"processing_at": "T", "resolved_at": "T"}),
        ("CANCELLED", "T", {"cancelled_at": "T"}),
        ("EXPIRED", "T", {"expired_at": "T"}),
        ("REVERSED", "T", {"reversed_at": "T"}),  # a row stored before times were kept
        ("TRACKED", None, {}),
    ],
)
def test_get_event_without_stored_times_has_the_time_of_its_status(h, status, processed, wanted):
    applied = [{"campaign_id": "base", "amount": 5}]
    h.lookup.events["e1"] = {"id": "e1", "customer_id": "c1", "type": "PURCHASE", "status": status,
                             "processed_at": processed, "result": {"rules_applied": applied}}  # fmt: skip
    data = h.client.get(f"{STOREFRONT_PREFIX}/behavior/events/e1", headers=BEARER).json()["data"]
    assert {k: data[k] for k in TIMES} == {**dict.fromkeys(TIMES), **wanted}
    assert data["rewarding_campaigns"] == ["base"] and data["status"] == status


MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def test_get_event_shows_every_transition_time(h):
    """RESOLVED, then REVERSED: the processor's times in the stored result give both."""
    times = {"processing_at": MS, "resolved_at": MS + HOUR, "reversed_at": MS + 2 * HOUR}
    h.lookup.events["e1"] = {"id": "e1", "customer_id": "c1", "type": "PURCHASE", "status": "REVERSED",
                             "processed_at": iso(MS + 2 * HOUR), "fulfilled": False,
                             "properties": {"amount": 5}, "result": {"times": times}}  # fmt: skip
    data = h.client.get("/behavior/events/e1", headers=BEARER).json()["data"]
    assert {k: data[k] for k in TIMES} == {
        "processing_at": iso(MS), "resolved_at": iso(MS + HOUR), "cancelled_at": None,
        "expired_at": None, "reversed_at": iso(MS + 2 * HOUR),
    }  # fmt: skip
    assert data["fulfilled"] is False and data["data"] == {"amount": 5}
    assert {"reserve", "queue_message_id", "rewarding_campaigns", "result", "issued_at"} <= set(data)


MASIVO_REPLY = ("id", "customer_id", "type", "data", "fulfilled", "reserve", "queue_message_id",
                "rewarding_campaigns", "status", "result", "issued_at", *TIMES)  # fmt: skip


def test_reverse_of_an_unfulfilled_event_answers_cancelled_in_masivos_shape(h):
    """The processor's answer to POST .../reverse on a reservation (the engine side is in
    tests/unit/test_loyalty_masivo.py): CANCELLED with cancelled_at, nothing granted."""
    event = {"id": "e1", "customer_id": "c1", "type": "PURCHASE", "issued_at": MS, "fulfilled": False,
             "reserve": 2, "properties": {"amount": 40}}  # fmt: skip
    detail = {"rules_applied": [], "accumulations": [], "redemptions": [], "event": event,
              "released": [{"reward_id": "POINTS", "amount": 40}], "command_id": None,
              "times": {"processing_at": MS, "cancelled_at": MS + HOUR}}  # fmt: skip

    def on_send(record):
        h.hub.complete(record["id"], {
            "event_id": "e1", "customer_id": "c1", "type": "PURCHASE", "kind": "REVERSE",
            "status": "CANCELLED", "reason": "abandoned", "points": 0.0, "config_version": 1,
            "processed_at": MS + HOUR, "reply_to": record["reply_to"],
            "detail": json.dumps({**detail, "command_id": record["id"]}), "wallet": {"points": 100.0},
        })  # fmt: skip

    h.producer.on_send = on_send
    body = {"customer_id": "c1", "reason": "abandoned"}
    url = f"{STOREFRONT_PREFIX}/behavior/events/e1/reverse?wait=true"
    resp = h.client.post(url, json=body, headers=BEARER)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert set(MASIVO_REPLY) <= set(data)
    assert (data["status"], data["event_id"], data["points"]) == ("CANCELLED", "e1", 0.0)
    assert (data["cancelled_at"], data["processing_at"]) == (iso(MS + HOUR), iso(MS))
    assert data["resolved_at"] is None and data["reversed_at"] is None
    assert (data["fulfilled"], data["reserve"], data["issued_at"]) == (False, 2, iso(MS))
    assert data["data"] == {"amount": 40} and data["result"]["wallet"] == {"points": 100.0}
    assert data["queue_message_id"] == f"test.events.loyalty/0/{len(h.producer.sent) - 1}"


# -- customers and consent in Masivo's shape (item 3) -----------------------------------------
MASIVO_PURPOSES = ("behavioral_campaigns", "coupon_campaigns", "punchcard_campaigns", "email_marketing",
                   "push_notifications", "link_tracking")  # fmt: skip
CONSENT_KEYS = {"consent_string", "version", "consent_timestamp", "customer_id", "purposes", "vendors"}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_consent_with_none_stored_has_every_purpose_true(h, prefix):
    resp = h.client.get(f"{prefix}/customers/new-1/consent", headers=BEARER)
    assert resp.status_code == 200, resp.text
    consent = resp.json()["data"]["consent"]
    assert set(consent) == CONSENT_KEYS and consent["customer_id"] == "new-1"
    assert all(consent["purposes"][p] is True for p in (*MASIVO_PURPOSES, "leaderboards"))
    assert consent["vendors"] == {} and consent["consent_string"] is None


def test_patch_consent_takes_masivos_object_and_get_shows_it(h):
    body = {"consent_string": "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA", "version": "2.0",
            "consent_timestamp": "2023-11-07T05:31:56Z", "customer_id": "c1",
            "purposes": {"link_tracking": False, "leaderboards": False, "email_marketing": True},
            "vendors": {"vendor_123": True, "vendor_456": False}}  # fmt: skip
    resp = h.client.patch("/customers/c1/consent", json=body, headers=BEARER)
    assert resp.status_code == 202, resp.text
    payload = json.loads(h.producer.sent[-1][2]["payload"])
    assert payload == {**{k: body[k] for k in ("consent_string", "version", "purposes", "vendors")},
                       "consent_timestamp": "2023-11-07T05:31:56+00:00"}  # fmt: skip
    # the profile as the processor then writes it, read back as the sink stores it
    row = {"profile_id": "c1", "consent": payload["purposes"],
           "profile": {"consent_record": {**{k: payload[k] for k in ("consent_string", "version",
                       "consent_timestamp")}, "vendors": body["vendors"]}}}  # fmt: skip
    h.lookup.customers["c1"] = customer_object("c1", row)
    consent = h.client.get("/customers/c1/consent", headers=BEARER).json()["data"]["consent"]
    assert consent["purposes"] == {**dict.fromkeys((*MASIVO_PURPOSES, "leaderboards"), True),
                                   "link_tracking": False, "leaderboards": False}  # fmt: skip
    assert consent["vendors"] == body["vendors"] and consent["version"] == "2.0"
    assert consent["consent_timestamp"] == "2023-11-07T05:31:56+00:00"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, "body"),
        ({"purposes": {}}, "purposes"),
        ({"purposes": {"spam": True}}, "purposes.spam"),
        ({"purposes": {"link_tracking": "yes"}}, "purposes.link_tracking"),
        ({"vendors": {"v1": 1}}, "vendors.v1"),
        ({"consent_timestamp": "yesterday"}, "consent_timestamp"),
        ({"version": 2}, "version"),
    ],
)
def test_a_bad_consent_field_is_a_422_naming_it(h, body, path):
    resp = h.client.patch("/customers/c1/consent", json=body, headers=BEARER)
    assert resp.status_code == 422, resp.text
    assert any(f["path"].startswith(path) for f in resp.json()["error"]["fields"]), resp.json()


def test_customer_object_in_masivos_shape(h):
    row = {"profile_id": "c1", "anonymous": False, "identified": True, "tier": "gold",
           "registered_at": "2026-01-01T00:00:00+00:00", "consent": {"email_marketing": False},
           "profile": {}, "purchase_count": 2, "wallet_id": "c1", "points": 30.0, "lifetime": 50.0,
           "pending": 0.0, "balance": {"POINTS": 30.0},
           "wallet": {"totals": [{"total": 30.0, "reward_id": "POINTS", "expiration_date": MS}]}}  # fmt: skip
    lines = [{"id": "l1", "amount": 30.0, "reward_id": "POINTS", "issued_at": MS - HOUR,
              "expiration_date": MS, "kind": "ACCUMULATION"}]  # fmt: skip
    h.lookup.customers["c1"] = customer_object("c1", row, lines)
    data = h.client.get(f"{STOREFRONT_PREFIX}/customers/c1", headers=BEARER).json()["data"]
    customer, wallet = data["customer"], data["wallet"]
    assert (customer["id"], customer["status"], customer["tier_id"]) == ("c1", "REGISTERED", "gold")
    assert customer["metrics"]["purchase_count"] == 2 and customer["is_anonymous"] is False
    assert customer["consent"]["purposes"]["email_marketing"] is False
    assert customer["consent"]["purposes"]["link_tracking"] is True
    assert (wallet["id"], wallet["owner_id"]) == ("c1", "c1")
    assert wallet["lines"] == [{**lines[0], "issued_at": iso(MS - HOUR), "expiration_date": iso(MS)}]
    (total,) = wallet["totals"]
    assert (total["total"], total["reward_id"], total["expiration_date"]) == (30.0, "POINTS", iso(MS))
    assert total["reward"] == {"id": "POINTS", "name": "Points", "type": "POINTS", "expires_after_days": None}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_masivo_reverse_and_consent_bodies_are_accepted_verbatim(shop, prefix):
    """Masivo's reverse body names no customer: it is found from the stored event."""
    shop.lookup.events["e1"] = {"id": "e1", "customer_id": "masivo-ann", "type": "PURCHASE"}
    resp = shop.client.post(f"{prefix}/behavior/events/e1/reverse", json=contract("reverse_event.json"),
                            headers=BEARER)  # fmt: skip
    assert resp.status_code == 202, resp.text
    _, key, record = shop.producer.sent[-1]
    assert (key, record["kind"], record["target_event_id"]) == ("masivo-ann", "REVERSE", "e1")
    assert json.loads(record["payload"]) == {"reason": "order returned"}
    body = contract("consent_patch.json")
    resp = shop.client.patch(f"{prefix}/customers/masivo-ann/consent", json=body, headers=BEARER)
    assert resp.status_code == 202, resp.text
    payload = json.loads(shop.producer.sent[-1][2]["payload"])
    assert payload["purposes"] == body["purposes"] and payload["vendors"] == body["vendors"]
