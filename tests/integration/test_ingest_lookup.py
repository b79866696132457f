"""Reads from the sink tables in a real PostgreSQL (schema made by the sinks' migrations):
event status, wallets, and the customer lookup behind fulfil/cancel/reverse."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from deploy.local.paths import free_port
from ingest.app import create_app
from ingest.config import IngestConfig
from ingest.lookup import PgLookup
from ingest.programs import StaticPrograms
from schemas.settings import Settings
from tests.support.ingest_fakes import PROGRAM, FakeProducer
from tests.support.pg import scratch_database

pytestmark = pytest.mark.integration
H = {"X-API-Key": "k"}


@pytest.fixture
def db_url(database_url: str) -> Iterator[str]:
    with scratch_database(database_url, "ingest") as url:
        yield url


def make_client(lookup_url: str, producer: FakeProducer) -> TestClient:
    app = create_app(
        Settings(),
        IngestConfig(api_keys={"k": frozenset({"ingest"})}),
        programs=StaticPrograms(PROGRAM),
        producer=producer,
        lookup=PgLookup(lookup_url, timeout_s=2),
        publisher=lambda p: 0,
    )
    return TestClient(app)


def test_event_status_wallet_and_command_lookup(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events (id, customer_id, type, status, points, result, issued_at)"
            " VALUES ('e1', 'c7', 'PURCHASE', 'RESOLVED', 12, '{\"rules_applied\": [\"x\"]}', now())"
        )
        conn.execute(
            "INSERT INTO wallets (customer_id, points, lifetime, pending, balance, wallet, tier,"
            " updated_at) VALUES ('c7', 12, 12, 0, '{\"POINTS\": 12}', '{\"points\": 12}', 'gold',"
            " now())"
        )
    producer = FakeProducer()
    with make_client(db_url, producer) as client:
        event = client.get("/behavior/events/e1", headers=H).json()["data"]
        assert event["status"] == "RESOLVED" and event["points"] == 12
        assert event["result"] == {"rules_applied": ["x"]} and event["customer_id"] == "c7"
        assert client.get("/behavior/events/nope", headers=H).status_code == 404
        wallet = client.get("/customers/c7/wallet", headers=H).json()["data"]
        assert wallet["balance"] == {"POINTS": 12} and wallet["tier"] == "gold"
        assert client.get("/customers/c8/wallet", headers=H).status_code == 404
        resp = client.post("/behavior/events/e1/reverse", json={"reason": "refund"}, headers=H)
        assert resp.status_code == 202
        _, key, record = producer.sent[-1]
        assert key == "c7" and record["type"] == "PURCHASE" and record["target_event_id"] == "e1"
        assert client.patch("/behavior/events/nope/fulfill", headers=H).status_code == 404


def test_unreachable_database_is_503():
    with make_client(f"postgresql://loyalty@127.0.0.1:{free_port()}/x", FakeProducer()) as client:
        resp = client.get("/customers/c1/wallet", headers=H)
        assert resp.status_code == 503 and "Retry-After" in resp.headers


@pytest.mark.parametrize(
    "url",
    ["/behavior/events/%00", "/behavior/events/a%00b", "/customers/%00/wallet", "/customers/a%00b/wallet"],
)
def test_nul_in_a_path_id_is_422_not_500(db_url, url):
    """psycopg refused the NUL (DataError) and the answer was {"error": {"code": "internal"}}."""
    with make_client(db_url, FakeProducer()) as client:
        resp = client.get(url, headers=H)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["fields"][0]["path"] in ("event_id", "customer_id")


def test_a_key_postgresql_refuses_is_no_row(db_url):
    """Behind the path rule: a DataError in a lookup is "not found" (404), never a 500."""
    lookup = PgLookup(db_url, timeout_s=2)
    assert asyncio.run(lookup.event("a\x00b")) is None
    assert asyncio.run(lookup.wallet("\x00")) is None
