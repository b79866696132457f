"""Customer history over the real sink tables: the loyalty engine's records for two customers
(purchases, direct points, a tier upgrade, an expiry) written by the sink into a migrated
PostgreSQL, then read through GET /customers/{id}, /events, /ledger and /tiers (pooled reads)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from ingest.app import create_app
from ingest.config import IngestConfig
from ingest.lookup import PgLookup
from ingest.programs import StaticPrograms
from schemas.program import Program
from schemas.settings import Settings
from sinks.batch import Batch
from sinks.mapping import Source
from sinks.writer import write_batch
from tests.integration.test_sink_every_kind import DAY, MINUTE, Pipeline
from tests.support.ingest_fakes import PROGRAM as INGEST_PROGRAM
from tests.support.ingest_fakes import FakeProducer

pytestmark = pytest.mark.integration
H = {"X-API-Key": "k"}
PROGRAM = Program.model_validate(
    {
        "version": 1,
        "rewards": [{"id": "POINTS", "name": "Points", "expires_after_days": 1}],
        "campaigns": [{"id": "base", "condition": "properties.amount > 0", "formula": "properties.amount"}],
        "tiers": {"reporting_period_days": 365, "levels": [
            {"id": "bronze", "name": "Bronze", "level": 0},
            {"id": "silver", "name": "Silver", "level": 1, "entry": "profile.lifetime_points >= 150"}]},
    }
)  # fmt: skip


def history(p: Pipeline) -> None:
    p.command("ann", "REGISTER")
    for amount in (40, 40, 40):
        p.send("ann", "PURCHASE", properties={"amount": amount})
        p.advance(MINUTE)
    p.send("bob", "PURCHASE", properties={"amount": 7})
    p.command("ann", "ADJUST", amount=100, reward_id="POINTS", reason="goodwill")  # -> silver
    p.advance(MINUTE)
    p.command("ann", "ADJUST", amount=-30, reward_id="POINTS", reason="correction")
    p.advance(2 * DAY)  # every POINTS line expires


@pytest.fixture(scope="module")
def client(sink_db: str) -> Iterator[TestClient]:
    pipeline = Pipeline(PROGRAM)
    history(pipeline)
    offsets: dict[str, int] = defaultdict(int)
    batch = Batch()
    for topic, value in pipeline.records:
        batch.add(value, Source(topic, 0, offsets[topic]), topic)
        offsets[topic] += 1
    with psycopg.connect(sink_db) as conn:
        assert not write_batch(conn, batch, {}).rejects
    app = create_app(Settings(), IngestConfig(api_keys={"k": frozenset({"ingest"})}),
                     programs=StaticPrograms(INGEST_PROGRAM), producer=FakeProducer(),
                     lookup=PgLookup(sink_db, timeout_s=2), publisher=lambda p: 0)  # fmt: skip
    with TestClient(app) as c:
        yield c


def get(client: TestClient, url: str, **params) -> dict:
    resp = client.get(url, params=params, headers=H)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_the_customer_object(client: TestClient, sink_db: str) -> None:
    data = get(client, "/customers/ann")["data"]
    customer, wallet = data["customer"], data["wallet"]
    assert data["customer_id"] == "ann" and customer["status"] == "REGISTERED"
    assert customer["tier_id"] == "silver" and customer["metrics"]["purchase_count"] == 3
    assert customer["metrics"]["lifetime_points"] == 190 and wallet["lifetime"] == 190
    assert wallet["points"] == 0 and wallet["balance"] == {}  # all expired
    assert client.get("/customers/nobody", headers=H).status_code == 404


def test_events_page_by_cursor_newest_first_with_filters(client: TestClient) -> None:
    seen, cursor = [], None
    while True:
        page = get(client, "/customers/ann/events", limit=2, **({"cursor": cursor} if cursor else {}))
        assert len(page["data"]) <= 2 and page["limit"] == 2
        seen += page["data"]
        if (cursor := page["next_cursor"]) is None:
            break
    assert len(seen) == len({e["id"] for e in seen}) == 7  # REGISTER, 3 purchases, 2 adjustments, expiry
    keys = [(e["issued_at"], e["id"]) for e in seen]
    assert keys == sorted(keys, reverse=True) and {e["customer_id"] for e in seen} == {"ann"}
    assert [e["kind"] for e in seen[:3]] == ["EXPIRE", "ADJUST", "ADJUST"]
    purchases = get(client, "/customers/ann/events", type="PURCHASE")["data"]
    assert len(purchases) == 3 and {e["status"] for e in purchases} == {"RESOLVED"}
    both = get(client, "/customers/ann/events", type=["PURCHASE", "COMMAND"])["data"]
    assert len(both) == 6  # Pipeline sends every command as type COMMAND
    first = purchases[-1]["issued_at"]
    assert len(get(client, "/customers/ann/events", type="PURCHASE", until=first)["data"]) == 0
    assert len(get(client, "/customers/ann/events", type="PURCHASE", since=first)["data"]) == 3
    assert get(client, "/customers/ann/events", status="FAILED")["data"] == []


def test_ledger_lines_say_why(client: TestClient) -> None:
    lines = get(client, "/customers/ann/ledger", limit=500)["data"]
    by_kind = defaultdict(list)
    for line in lines:
        by_kind[line["kind"]].append(line)
    (credit,) = [ln for ln in by_kind["ADJUSTMENT"] if ln["amount"] > 0]
    assert credit["why"]["reason"] == "goodwill" and credit["why"]["event_type"] == "COMMAND"
    debits = [ln for ln in by_kind["ADJUSTMENT"] if ln["amount"] < 0]
    assert sum(ln["amount"] for ln in debits) == -30 and all(ln["why"]["source_line_id"] for ln in debits)
    assert {ln["why"]["campaign_id"] for ln in by_kind["ACCUMULATION"]} == {"base"}
    assert {ln["why"]["event_type"] for ln in by_kind["ACCUMULATION"]} == {"PURCHASE"}
    assert by_kind["EXPIRY"] and all(ln["why"]["expiration_date"] for ln in by_kind["EXPIRY"])
    assert all("event_id" not in ln["why"] for ln in by_kind["EXPIRY"])
    only = get(client, "/customers/ann/ledger", kind="ADJUSTMENT")["data"]
    assert {ln["kind"] for ln in only} == {"ADJUSTMENT"} and len(only) == len(by_kind["ADJUSTMENT"])


def test_tier_history(client: TestClient) -> None:
    (change,) = get(client, "/customers/ann/tiers")["data"]
    assert (change["from_tier_id"], change["to_tier_id"]) == ("bronze", "silver")
    assert change["triggered_by"] == "EVENT"
    assert change["trigger_event_type"] == "COMMAND" and change["direction"]
    assert get(client, "/customers/bob/tiers")["data"] == []


@pytest.mark.parametrize("cursor", ["nope!", "bm9wZQ", "WyJ4IiwgMV0"])
def test_a_cursor_not_issued_by_the_service_is_422(client: TestClient, cursor: str) -> None:
    resp = client.get("/customers/ann/events", params={"cursor": cursor}, headers=H)
    assert resp.status_code == 422 and resp.json()["error"]["fields"][0]["path"].endswith("cursor")


def test_limit_bounds(client: TestClient) -> None:
    assert client.get("/customers/ann/events?limit=501", headers=H).status_code == 422
    assert client.get("/customers/ann/events?limit=0", headers=H).status_code == 422
    assert len(get(client, "/customers/ann/events")["data"]) == 7  # default 50
