"""Masivo's event lifecycle and customer shapes end to end (issue 16): ingest, the real loyalty
processor and the sink over the real broker and PostgreSQL, driven by the contract bodies of
tests/contracts/masivo/ under Masivo's /api/storefront/v1 base path.

- POST /behavior/events/{id}/reverse on an unfulfilled event cancels it: CANCELLED with
  cancelled_at, the reserved points back, nothing granted.
- The program's fulfilment.expire_after_hours (here 0.001 h = 3.6 s) expires an unfulfilled
  event sent without `reserve`.
- An event RESOLVED then REVERSED keeps both times in GET /behavior/events/{id} and the
  events table.
- PATCH then GET /customers/{id}/consent with Masivo's consent object, and GET /customers/{id}
  in Masivo's shape.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from ingest.app import STOREFRONT_PREFIX, create_app
from ingest.config import IngestConfig
from plumbing.config_table import publish_program
from processors.loyalty.processor import build
from processors.runtime.runner import Runner, RuntimeOptions
from processors.runtime.testing import wait_for
from schemas.program import Program
from schemas.settings import Settings, libpq_url

pytestmark = pytest.mark.integration
H = {"Authorization": "Bearer k"}
CONTRACTS = Path(__file__).parents[1] / "contracts" / "masivo"
EXPIRY_S = 3.6
PROGRAM = Program.model_validate(
    {
        "campaigns": [{"id": "base", "condition": "properties.amount > 0", "formula": "properties.amount"}],
        "fulfilment": {"expire_after_hours": EXPIRY_S / 3600},
    }
)
TIMES = ("processing_at", "resolved_at", "cancelled_at", "expired_at", "reversed_at")


def contract(name: str, customer: str) -> dict:
    body = json.loads((CONTRACTS / name).read_text())
    return {**body, "customer_id": customer} if "customer_id" in body else body


@pytest.fixture
def client(settings: Settings, cfg: Settings, sink, tmp_path) -> Iterator[TestClient]:
    """Ingest reading the sink's database, the loyalty processor and the sink, one topic prefix."""
    version = publish_program(settings, PROGRAM)
    runner = Runner(build(), settings, RuntimeOptions(state_dir=tmp_path, instance_id="l")).start()
    runner.program_table.wait_for_version(version, timeout=60)
    app = create_app(cfg, IngestConfig(api_keys={"k": frozenset({"ingest"})}))
    try:
        with TestClient(app) as c:
            yield c
    finally:
        runner.stop()
        assert runner.error is None


def post(client: TestClient, path: str, body: dict, method: str = "post") -> dict:
    url = f"{STOREFRONT_PREFIX}{path}?wait=true&timeout=30"
    resp = getattr(client, method)(url, json=body, headers=H)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def stored(client: TestClient, event_id: str, status: str) -> dict:
    """GET /behavior/events/{id} once the sink holds the event with `status`."""

    def check() -> dict | None:
        resp = client.get(f"{STOREFRONT_PREFIX}/behavior/events/{event_id}", headers=H)
        data = resp.json().get("data") if resp.status_code == 200 else None
        return data if data and data["status"] == status else None

    return wait_for(check, timeout=60, what=f"event {event_id} {status} in the sink")


def columns(cfg: Settings, event_id: str) -> dict:
    with psycopg.connect(libpq_url(cfg.database_url)) as conn:
        row = conn.execute(f"SELECT {', '.join(TIMES)} FROM events WHERE id = %s", (event_id,)).fetchone()
    return {name: value is not None for name, value in zip(TIMES, row, strict=True)}


def test_reverse_before_fulfil_cancels_and_the_program_expires_unfulfilled_events(client, cfg):
    customer = f"m-{uuid.uuid4().hex[:8]}"
    earned = post(client, "/behavior/events", contract("event_purchase_order.json", customer))
    assert earned["status"] == "RESOLVED" and earned["wallet"]["points"] == 250

    # reserve 2 days, 10 points held; Masivo's reverse body names no customer: found in the sink
    held = post(client, "/behavior/events", contract("event_redeem.json", customer))
    assert held["status"] == "PENDING" and held["wallet"]["pending"] == 10
    stored(client, held["id"], "PENDING")
    cancel = post(client, f"/behavior/events/{held['id']}/reverse", contract("reverse_event.json", customer))
    assert (cancel["status"], cancel["event_id"]) == ("CANCELLED", held["id"])
    assert cancel["reason"] == "order returned"
    assert cancel["points"] == 0 and cancel["cancelled_at"] and cancel["processing_at"]
    assert cancel["resolved_at"] is None and cancel["reversed_at"] is None
    assert cancel["wallet"]["points"] == 250 and cancel["wallet"]["pending"] == 0
    assert (cancel["fulfilled"], cancel["reserve"]) == (False, 2)
    row = stored(client, held["id"], "CANCELLED")
    assert row["points"] == 0 and {k: row[k] is not None for k in TIMES} == columns(cfg, held["id"]) == {
        "processing_at": True, "resolved_at": False, "cancelled_at": True, "expired_at": False,
        "reversed_at": False,
    }  # fmt: skip
    fulfil = client.patch(f"/behavior/events/{held['id']}/fulfill?wait=true&timeout=30",
                          json={"customer_id": customer}, headers=H)  # fmt: skip
    assert fulfil.json()["data"]["status"] == "FAILED"  # cancelled for good: nothing granted later

    # no `reserve`: the program's 3.6 s, then EXPIRED by the processor's timer
    waiting = post(client, "/behavior/events", contract("event_unfulfilled.json", customer))
    assert waiting["status"] == "PENDING" and waiting["wallet"]["pending"] == 20
    expired = stored(client, waiting["id"], "EXPIRED")
    assert expired["expired_at"] and expired["processing_at"] and expired["points"] == 0
    assert columns(cfg, waiting["id"])["expired_at"]
    seconds = (_at(expired["expired_at"]) - _at(expired["processing_at"])).total_seconds()
    assert EXPIRY_S <= seconds < 24 * 3600  # the program's hold, not the 24 h default
    wallet = client.get(f"{STOREFRONT_PREFIX}/customers/{customer}/wallet", headers=H).json()["data"]
    assert wallet["points"] == 250 and wallet["pending"] == 0


def test_resolved_then_reversed_keeps_both_times(client, cfg):
    customer = f"m-{uuid.uuid4().hex[:8]}"
    earned = post(client, "/behavior/events", contract("event_purchase_order.json", customer))
    stored(client, earned["id"], "RESOLVED")
    back = post(client, f"/behavior/events/{earned['id']}/reverse", contract("reverse_event.json", customer))
    assert back["status"] == "REVERSED" and back["resolved_at"] == earned["resolved_at"]
    row = stored(client, earned["id"], "REVERSED")
    assert row["resolved_at"] == earned["resolved_at"] and row["reversed_at"] == back["reversed_at"]
    assert row["processing_at"] == earned["processing_at"] and row["cancelled_at"] is None
    assert columns(cfg, earned["id"]) == {"processing_at": True, "resolved_at": True, "cancelled_at": False,
                                          "expired_at": False, "reversed_at": True}  # fmt: skip


def test_consent_and_customer_in_masivos_shape(client):
    customer = f"m-{uuid.uuid4().hex[:8]}"
    url = f"{STOREFRONT_PREFIX}/customers/{customer}/consent"
    default = client.get(url, headers=H).json()["data"]["consent"]
    assert all(default["purposes"].values()) and default["vendors"] == {}
    body = contract("consent_patch.json", customer)
    assert post(client, f"/customers/{customer}/consent", body, method="patch")["status"] == "RESOLVED"

    def consent() -> dict | None:
        shown = client.get(url, headers=H).json()["data"]["consent"]
        return shown if shown["vendors"] else None

    shown = wait_for(consent, timeout=60, what="the consent in the sink")
    assert shown["purposes"] == {**body["purposes"], "leaderboards": True}  # ours, never refused
    assert {k: shown[k] for k in ("consent_string", "version", "vendors")} == {
        k: body[k] for k in ("consent_string", "version", "vendors")
    }
    assert _at(shown["consent_timestamp"]) == _at(body["consent_timestamp"])

    post(client, "/behavior/events", contract("event_purchase_order.json", customer))

    def customer_object() -> dict | None:
        resp = client.get(f"{STOREFRONT_PREFIX}/customers/{customer}", headers=H)
        data = resp.json()["data"] if resp.status_code == 200 else None
        return data if data and data["wallet"] and data["wallet"]["lines"] else None

    data = wait_for(customer_object, timeout=60, what="the customer and wallet in the sink")
    assert data["customer"]["id"] == customer and data["customer"]["status"] == "ACTIVE"
    assert data["customer"]["metrics"]["purchase_count"] == 1
    assert data["customer"]["consent"]["purposes"]["link_tracking"] is False
    wallet = data["wallet"]
    assert wallet["id"] == wallet["owner_id"] == customer
    assert [line["amount"] for line in wallet["lines"]] == [250]
    (total,) = wallet["totals"]
    assert (total["total"], total["reward_id"], total["reward"]["type"]) == (250, "POINTS", "POINTS")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
