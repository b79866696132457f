"""Masivo drop-in (issue 16): the storefront base path, Masivo's event body shapes and
POST /coupons/redeem, against the ingest app with fakes (no Kafka)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ingest.app import STOREFRONT_PREFIX
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
