"""Masivo's shapes through ingest and the real loyalty processor over the real broker: an
order body earns by the order rules, POST /coupons/redeem redeems a per-customer coupon once,
both under Masivo's /api/storefront/v1 base path (issue 16)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.app import STOREFRONT_PREFIX, create_app
from ingest.config import IngestConfig
from plumbing.config_table import publish_program
from processors.loyalty.processor import build
from processors.runtime.runner import Runner, RuntimeOptions
from schemas.program import Program

pytestmark = pytest.mark.integration
H = {"Authorization": "Bearer k"}
CONTRACTS = Path(__file__).parents[1] / "contracts" / "masivo"
PROGRAM = Program.model_validate(
    {
        "event_types": [{"name": "COUPON_USE"}],
        "campaigns": [
            {"id": "base", "condition": "properties.amount > 0", "formula": "properties.amount"},
            {"id": "big-order", "condition": "order.value >= 200", "formula": "100"},
            {"id": "bonus", "condition": 'order.products.exists(p, "bonus" in p.tags)',
             "formula": 'double(size(order.products.filter(p, "bonus" in p.tags))) * 25'},
            {"id": "summer", "kind": "coupon", "triggers": ["COUPON_USE"], "formula": "300",
             "coupon": {"codes": ["SUMMER24"], "single_use": "per_customer"}},
        ],
    }
)  # fmt: skip


@pytest.fixture
def client(settings, tmp_path) -> Iterator[TestClient]:
    version = publish_program(settings, PROGRAM)
    runner = Runner(build(), settings, RuntimeOptions(state_dir=tmp_path, instance_id="l")).start()
    runner.program_table.wait_for_version(version, timeout=60)
    app = create_app(settings, IngestConfig(api_keys={"k": frozenset({"ingest"})}))
    try:
        with TestClient(app) as c:
            yield c
    finally:
        runner.stop()
        assert runner.error is None


def post(client: TestClient, path: str, body: dict) -> dict:
    resp = client.post(f"{STOREFRONT_PREFIX}{path}?wait=true&timeout=30", json=body, headers=H)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def test_order_body_and_coupon_redeem_through_the_loyalty_processor(client):
    customer = f"m-{uuid.uuid4().hex[:8]}"
    order = {**json.loads((CONTRACTS / "event_purchase_order.json").read_text()), "customer_id": customer}
    earned = post(client, "/behavior/events", order)
    # amount = order.value 250, +100 big order, +25 for the one "bonus" product line
    assert earned["status"] == "RESOLVED" and earned["points"] == 250 + 100 + 25
    assert earned["resolved_at"] and earned["processing_at"] == earned["resolved_at"]
    assert earned["cancelled_at"] is None
    assert set(earned["rewarding_campaigns"]) == {"base", "big-order", "bonus"}
    coupon = {**json.loads((CONTRACTS / "coupon_redeem.json").read_text()), "customer_id": customer}
    first = post(client, "/coupons/redeem", coupon)
    assert first["status"] == "RESOLVED" and first["points"] == 300
    again = post(client, "/coupons/redeem", coupon)
    assert again["points"] == 0 and "already used" in json.dumps(again["rules_skipped"])
    assert again["wallet"]["points"] == 250 + 100 + 25 + 300
