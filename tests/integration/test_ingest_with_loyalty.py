"""Ingest and the real loyalty processor over the real broker: synchronous replies for events
and for commands (fulfil), idempotent repeats that return the first result, and a sync answer
that agrees with what GET /behavior/events/{id} later reads from the sink."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ingest.app import create_app
from ingest.config import IngestConfig
from plumbing.config_table import publish_program
from processors.loyalty.processor import build
from processors.runtime.runner import Runner, RuntimeOptions
from processors.runtime.testing import wait_for
from schemas.program import Campaign, Program, PunchCard

pytestmark = pytest.mark.integration
H = {"X-API-Key": "k"}
PROGRAM = Program(
    campaigns=[
        Campaign(id="base", condition="properties.amount > 0", formula="properties.amount"),
        Campaign(id="card", kind="punch_card", punch_card=PunchCard(punches=3), formula="5"),
    ]
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
    assert first["rules_skipped"] == [
        {"campaign_id": "card", "reason": "punch recorded", "failed": False, "punches": 1, "of": 3}
    ]
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


def test_sync_answer_and_stored_result_agree(client, sink_settings):
    """?wait=true left out rules_skipped (punch-card progress); GET shows the stored result."""
    body = {"customer_id": "c2", "type": "PURCHASE", "reference": "p1", "properties": {"amount": 3}}
    sync = post(client, body)
    assert sync["rules_skipped"][0]["punches"] == 1
    app = create_app(sink_settings, IngestConfig(api_keys={"k": frozenset({"ingest"})}),
                     listen_for_results=False)  # fmt: skip
    with TestClient(app) as reader:

        def stored() -> dict | None:
            resp = reader.get(f"/behavior/events/{sync['id']}", headers=H)
            return resp.json()["data"] if resp.status_code == 200 and resp.json()["data"]["result"] else None

        row = wait_for(stored, timeout=60, what="the sink to store the result")
    result = row["result"]
    for key in ("status", "points", "rules_applied", "rules_skipped", "accumulations", "duplicate"):
        assert sync[key] == result[key], key
    assert row["status"] == sync["status"] and row["points"] == sync["points"]
