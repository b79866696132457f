"""Broker outage: ingest answers 503 + Retry-After while Kafka is down, recovers when it is
back, and every event that got a 202 is on the topic exactly once."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
from fastapi.testclient import TestClient

from deploy.local import kafka
from ingest.app import create_app
from ingest.config import IngestConfig
from ingest.programs import StaticPrograms
from plumbing.topic_admin import ensure_topics
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import EVENTS_LOYALTY, TOPICS
from tests.integration.test_ingest_kafka import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
H = {"X-API-Key": "k"}


@pytest.fixture
def broker(monkeypatch):
    if not any(kafka.libs_dir().glob("kafka_2.13-*.jar")) and os.path.isdir("/tmp/kjars"):
        monkeypatch.setenv("LOYALTY_KAFKA_LIBS", "/tmp/kjars")
    with kafka.test_broker_process() as process:
        yield process


def post(client: TestClient, i: int):
    body = {"customer_id": f"c{i % 5}", "type": "PURCHASE", "reference": f"r{i}"}
    return client.post("/behavior/events", json=body, headers=H)


def test_outage_gives_503_and_loses_nothing_acknowledged(broker):
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, topic_prefix="outage.", partitions=3)
    ensure_topics(settings, [TOPICS[EVENTS_LOYALTY]])
    config = IngestConfig(api_keys={"k": frozenset({"ingest"})}, ack_timeout_s=2.0)
    app = create_app(
        settings,
        config,
        programs=StaticPrograms(Program()),
        lookup=object(),
        publisher=lambda p: 0,
        listen_for_results=False,
    )
    accepted: list[str] = []
    with TestClient(app) as client:
        for i in range(20):
            resp = post(client, i)
            assert resp.status_code == 202, resp.text
            accepted.append(resp.json()["data"]["id"])

        broker.stop()
        for i in range(20, 23):
            resp = post(client, i)
            assert resp.status_code == 503
            assert resp.headers["Retry-After"] == "1"
            assert resp.json()["error"]["code"] == "unavailable"

        broker.start()
        n, deadline = 23, time.monotonic() + 60
        while (resp := post(client, n)).status_code != 202:
            assert resp.status_code == 503 and time.monotonic() < deadline
            n += 1
        accepted.append(resp.json()["data"]["id"])
        for i in range(n + 1, n + 21):
            resp = post(client, i)
            assert resp.status_code == 202
            accepted.append(resp.json()["data"]["id"])

    seen = Counter(r["id"] for _, r, _ in read_topic(settings, EVENTS_LOYALTY, len(accepted)))
    assert all(seen[event_id] == 1 for event_id in accepted), seen
    assert not [k for k, n in seen.items() if n > 1], "an event was written twice"
