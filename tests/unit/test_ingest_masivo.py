"""Masivo drop-in (issue 16): the storefront base path, Masivo's event body shapes and
POST /coupons/redeem, against the ingest app with fakes (no Kafka)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.app import STOREFRONT_PREFIX
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
        ("REVERSED", "T", {"reversed_at": "T"}),  # when it was resolved is not stored
        ("TRACKED", None, {}),
    ],
)
def test_get_event_has_the_time_of_its_status(h, status, processed, wanted):
    applied = [{"campaign_id": "base", "amount": 5}]
    h.lookup.events["e1"] = {"id": "e1", "customer_id": "c1", "type": "PURCHASE", "status": status,
                             "processed_at": processed, "result": {"rules_applied": applied}}  # fmt: skip
    data = h.client.get(f"{STOREFRONT_PREFIX}/behavior/events/e1", headers=BEARER).json()["data"]
    assert {k: data[k] for k in TIMES} == {**dict.fromkeys(TIMES), **wanted}
    assert data["rewarding_campaigns"] == ["base"] and data["status"] == status
