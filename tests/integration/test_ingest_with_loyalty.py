"""Ingest and the real loyalty processor over the real broker: synchronous replies for events
and for commands (fulfil), and idempotent repeats that return the first result."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ingest.app import create_app
from ingest.config import IngestConfig
from processors.loyalty.processor import build
from processors.runtime.config_table import publish_program
from processors.runtime.runner import Runner, RuntimeOptions
from schemas.program import Campaign, Program

pytestmark = pytest.mark.integration
H = {"X-API-Key": "k"}
PROGRAM = Program(
    campaigns=[Campaign(id="base", condition="properties.amount > 0", formula="properties.amount")]
)


@pytest.fixture
def client(settings, tmp_path) -> Iterator[TestClient]:
    version = publish_program(settings, PROGRAM)
    runner = Runner(build(), settings, RuntimeOptions(state_dir=tmp_path, instance_id="l")).start()
    runner.program_table.wait_for_version(version, timeout=60)
    app = create_app(settings, IngestConfig(api_keys={"k": frozenset({"ingest", "admin"})}))
    try:
        with TestClient(app) as c:
            yield c
    finally:
        runner.stop()
        assert runner.error is None


def post(client: TestClient, body: dict) -> dict:
    resp = client.post("/behavior/events?wait=true&timeout=30", json=body, headers=H)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def test_sync_purchase_repeat_and_fulfil_command(client):
    purchase = {"customer_id": "c1", "type": "PURCHASE", "reference": "o1", "properties": {"amount": 40}}
    first = post(client, purchase)
    assert first["status"] == "RESOLVED" and first["points"] == 40
    repeat = post(client, purchase)
    assert repeat["id"] == first["id"] and repeat["points"] == 40  # the first result, no new points

    reserved = post(client, {**purchase, "reference": "o2", "fulfilled": False})
    assert reserved["status"] == "PENDING"
    resp = client.patch(f"/behavior/events/{reserved['id']}/fulfill?wait=true&timeout=30",
                        json={"customer_id": "c1"}, headers=H)  # fmt: skip
    assert resp.status_code == 200, resp.text  # the command's reply arrives, not a 202 timeout
    assert resp.json()["data"]["status"] == "RESOLVED"
    wallet = resp.json()["data"]["wallet"]
    assert wallet["points"] == 80
