"""Badges over the real sink tables: the loyalty engine awards and revokes badges, the sink
writes customer_badges in a migrated PostgreSQL, and GET /customers/{id}/badges reads them
with the program's description and image."""

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
from tests.integration.test_sink_every_kind import MINUTE, Pipeline
from tests.support.ingest_fakes import FakeProducer

pytestmark = pytest.mark.integration
H = {"X-API-Key": "k"}
PROGRAM = Program.model_validate(
    {
        "version": 1,
        "event_types": [{"name": "REVIEW"}],
        "badges": [
            {"id": "critic", "name": "Critic", "description": "Two reviews", "image_url": "https://x/c.png"},
            {"id": "whale", "name": "Whale", "description": "An order of 1000"},
        ],
        "achievements": [
            {
                "id": "two-reviews",
                "triggers": ["REVIEW"],
                "target": 2,
                "repeatable": True,
                "badge_id": "critic",
            }
        ],
        "campaigns": [
            {"id": "whale", "condition": "properties.amount >= 1000", "award_badge": "whale"},
        ],
    }
)


@pytest.fixture(scope="module")
def client(sink_db: str) -> Iterator[TestClient]:
    p = Pipeline(PROGRAM)
    for _ in range(4):  # the repeatable achievement completes twice: critic held twice
        p.send("ann", "REVIEW")
        p.advance(MINUTE)
    big = p.send("ann", "PURCHASE", properties={"amount": 1000})
    p.advance(MINUTE)
    p.command("ann", "REVERSE", big)  # whale taken back
    p.send("bob", "REVIEW")  # halfway: no badge
    offsets: dict[str, int] = defaultdict(int)
    batch = Batch()
    for topic, value in p.records:
        batch.add(value, Source(topic, 0, offsets[topic]), topic)
        offsets[topic] += 1
    with psycopg.connect(sink_db) as conn:
        assert not write_batch(conn, batch, {}).rejects
    app = create_app(Settings(), IngestConfig(api_keys={"k": frozenset({"ingest"})}),
                     programs=StaticPrograms(PROGRAM), producer=FakeProducer(),
                     lookup=PgLookup(sink_db, timeout_s=2), publisher=lambda p: 0)  # fmt: skip
    with TestClient(app) as c:
        yield c


def get(client: TestClient, url: str) -> list[dict]:
    resp = client.get(url, headers=H)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def test_held_badges_with_the_program_description(client: TestClient) -> None:
    (critic,) = get(client, "/customers/ann/badges")
    assert critic["badge_id"] == "critic" and critic["count"] == 2
    assert (critic["badge_name"], critic["description"], critic["image_url"]) == (
        "Critic",
        "Two reviews",
        "https://x/c.png",
    )
    assert critic["achievement_id"] == "two-reviews" and critic["trigger_event_type"] == "REVIEW"
    assert critic["first_awarded_at"] < critic["awarded_at"] and critic["revoked_at"] is None
    assert get(client, "/customers/bob/badges") == []


def test_a_revoked_badge_is_listed_on_request(client: TestClient) -> None:
    by_id = {b["badge_id"]: b for b in get(client, "/customers/ann/badges?revoked=true")}
    whale = by_id["whale"]
    assert whale["count"] == 0 and whale["revoked_at"] and whale["campaign_id"] == "whale"
    assert whale["trigger_event_type"] == "PURCHASE"
