"""POST /behavior/events?dry_run=true on real PostgreSQL: customers' histories run through the
loyalty engine in memory (its real code) and are written by the sink (mapping and writer) into a
migrated database; a dry run through the app (PgLookup) reads that state and answers. Every table
is the same before and after, nothing is produced, and the answer equals what the same event then
does when it is processed for real."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from ingest.app import create_app
from ingest.config import IngestConfig
from ingest.lookup import PgLookup
from ingest.programs import StaticPrograms
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import LOYALTY_RESULTS, NOTIFICATIONS
from sinks.batch import Batch
from sinks.mapping import Source
from sinks.writer import write_batch
from tests.integration.test_sink_every_kind import MINUTE, Pipeline
from tests.support.ingest_fakes import FakeProducer

pytestmark = pytest.mark.integration
H = {"X-API-Key": "k"}
PROGRAM = Program.model_validate(
    {
        "version": 1,
        "event_types": [{"name": "PURCHASE", "schema": {"type": "object", "properties": {
            "amount": {"type": "number", "minimum": 0}}, "required": ["amount"]}}],
        "campaigns": [
            {"id": "spend", "condition": "properties.amount > 0", "formula": "properties.amount"},
            {"id": "welcome-buy", "condition": "true", "formula": "25", "per_customer_limit": 1},
            {"id": "big", "condition": "properties.amount >= 500", "formula": "100"},
        ],
        "tiers": {"levels": [
            {"id": "bronze", "name": "Bronze", "level": 0},
            {"id": "gold", "name": "Gold", "level": 1, "entry": "profile.lifetime_points >= 200",
             "multiplier": 2.0},
        ]},
    }
)  # fmt: skip
TABLES = ("events", "ledger_lines", "wallets", "wallet_lines", "customers", "tier_changes", "notifications")


class Written:
    """What the sink has written so far: next offset per topic, committed offsets."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = defaultdict(int)
        self.committed: dict[tuple[str, int], int] = {}

    def write(self, pipeline: Pipeline, sink_db: str) -> None:
        """The pipeline's records not yet written, through the sink's batch and writer."""
        with psycopg.connect(sink_db) as conn:
            batch = Batch()
            for topic, value in pipeline.records[sum(self.offsets.values()) :]:
                batch.add(value, Source(topic, 0, self.offsets[topic]), topic, PROGRAM)
                self.offsets[topic] += 1
            assert not write_batch(conn, batch, self.committed).rejects
            conn.commit()
            self.committed.update(batch.offsets)


def snapshot(sink_db: str) -> dict[str, list]:
    with psycopg.connect(sink_db) as conn:
        return {t: conn.execute(f"SELECT to_jsonb(x)::text FROM {t} x ORDER BY 1").fetchall() for t in TABLES}


@pytest.fixture(scope="module")
def world(sink_db: str) -> Iterator[tuple[Pipeline, TestClient, FakeProducer, Written]]:
    pipeline = Pipeline(PROGRAM)
    pipeline.command("ann", "REGISTER")
    for amount in (40, 60, 50):  # 150 + welcome 25 = 175 lifetime: 25 short of gold
        pipeline.send("ann", "PURCHASE", properties={"amount": amount})
        pipeline.advance(MINUTE)
    pipeline.command("bob", "REGISTER")
    sink = Written()
    sink.write(pipeline, sink_db)
    producer = FakeProducer()
    app = create_app(Settings(), IngestConfig(api_keys={"k": frozenset({"ingest"})}),
                     programs=StaticPrograms(PROGRAM), producer=producer,
                     lookup=PgLookup(sink_db, timeout_s=2), publisher=lambda p: 0,
                     clock=pipeline.loyalty.clock.now_ms)  # fmt: skip
    with TestClient(app) as client:
        yield pipeline, client, producer, sink


def real(pipeline: Pipeline, event: dict) -> tuple[dict, list[str]]:
    """The event processed for real: its result (as the dry run shows results) and webhooks."""
    start = len(pipeline.records)
    pipeline.send(event["customer_id"], "PURCHASE", id=event["event_id"], properties=event["properties"])
    records = pipeline.records[start:]
    res = next(v for t, v in records if t == LOYALTY_RESULTS and v["event_id"] == event["event_id"])
    detail = orjson.loads(res["detail"])
    shown = {k: detail[k] for k in ("rules_applied", "rules_skipped", "accumulations")}
    hooks = [v["event"] for t, v in records if t == NOTIFICATIONS]
    return {"status": res["status"], "points": res["points"], **shown}, hooks


@pytest.mark.parametrize(("customer", "amount"), [("ann", 30), ("bob", 600)])
def test_dry_run_changes_nothing_and_equals_the_real_event(world, sink_db: str, customer: str, amount: int):
    pipeline, client, producer, sink = world
    before = snapshot(sink_db)
    event = {"customer_id": customer, "type": "PURCHASE", "properties": {"amount": amount}}
    resp = client.post("/behavior/events?dry_run=true", headers=H, json=event)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert resp.json()["dry_run"] is True and data["state"]["found"] is True
    assert snapshot(sink_db) == before and producer.sent == []
    got, hooks = real(pipeline, {**data, "properties": {"amount": amount}})
    assert {k: data[k] for k in got} == got
    assert [n["event"] for n in data["notifications"]] == hooks
    sink.write(pipeline, sink_db)  # the real event lands: PostgreSQL now shows what the dry run said
    with psycopg.connect(sink_db) as conn:
        tier, lifetime = conn.execute(
            "SELECT tier, lifetime FROM wallets WHERE customer_id = %s", (customer,)
        ).fetchone()
    assert tier == data["tier"]["after"]["id"] and lifetime == data["wallet"]["lifetime"]
    if customer == "ann":  # the welcome campaign already rewarded her: its limit, read from PostgreSQL
        assert (data["tier"]["before"]["id"], data["tier"]["after"]["id"]) == ("bronze", "gold")
        assert "TIER_UPGRADE" in hooks
        skipped = {r["campaign_id"]: r["reason"] for r in data["rules_skipped"]}
        assert skipped["welcome-buy"] == "per-customer limit of 1 reached"
