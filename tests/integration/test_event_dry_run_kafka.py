"""POST /behavior/events?dry_run=true on the real broker, loyalty processor and sink: the answer
comes from the partition that owns the customer (their real state), nothing changes (the
processor's outputs and changelogs keep their end offsets, every sink table keeps its rows once
the sink has read past the DRY_RUN command), and the same event sent for real then does exactly
what the dry run said."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from fastapi.testclient import TestClient

from ingest.app import create_app
from ingest.config import IngestConfig
from plumbing.config_table import publish_program
from processors.loyalty.processor import LoyaltyProcessor, build
from processors.runtime.changelog import changelog_topic
from processors.runtime.runner import Runner, RuntimeOptions
from processors.runtime.task import TIMERS_STORE
from processors.runtime.testing import wait_for
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import EVENTS_LOYALTY, LOYALTY_RESULTS, NOTIFICATIONS, PROFILES_CHANGES, topic_name
from sinks.mapping import SOURCE_TOPICS

pytestmark = pytest.mark.integration
H = {"X-API-Key": "k"}
PROGRAM = Program.model_validate(
    {
        "event_types": [{"name": "PURCHASE", "schema": {"type": "object", "properties": {
            "amount": {"type": "number", "minimum": 0}}, "required": ["amount"]}}],
        "campaigns": [
            {"id": "spend", "condition": "properties.amount > 0", "formula": "properties.amount"},
            {"id": "welcome-buy", "condition": "true", "formula": "25", "per_customer_limit": 3},
            {"id": "big", "condition": "properties.amount >= 500", "formula": "100"},
        ],
        "tiers": {"levels": [
            {"id": "bronze", "name": "Bronze", "level": 0},
            {"id": "gold", "name": "Gold", "level": 1, "entry": "profile.lifetime_points >= 200",
             "multiplier": 2.0},
        ]},
    }
)  # fmt: skip
SHOWN = ("status", "points", "rules_applied", "rules_skipped")
LINE = ("id", "amount", "reward_id", "campaign_id", "rule", "kind")  # not its time: it is later


@pytest.fixture
def stack(settings: Settings, cfg: Settings, sink, tmp_path) -> Iterator[tuple[TestClient, Settings]]:
    version = publish_program(settings, PROGRAM)
    runner = Runner(build(), cfg, RuntimeOptions(state_dir=tmp_path, instance_id="l")).start()
    runner.program_table.wait_for_version(version, timeout=60)
    app = create_app(cfg, IngestConfig(api_keys={"k": frozenset({"ingest"})}))
    try:
        with TestClient(app) as client:
            yield client, cfg
    finally:
        runner.stop()
        assert runner.error is None


def ends(settings: Settings) -> dict[tuple[str, int], int]:
    """End offset of every partition of what the loyalty processor writes (transaction
    markers included: a committed transaction that touched a partition moves its end)."""
    group = topic_name(LoyaltyProcessor.name, settings)
    written = (LOYALTY_RESULTS, NOTIFICATIONS, PROFILES_CHANGES, EVENTS_LOYALTY)
    topics = [topic_name(t, settings) for t in written]
    topics += [changelog_topic(group, s) for s in (*LoyaltyProcessor.stores, TIMERS_STORE)]
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "dry-run-ends"})
    try:
        out = {}
        for topic in topics:
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                out[(topic, p)] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        return out
    finally:
        consumer.close()


def tables(url: str) -> dict[str, list]:
    with psycopg.connect(url) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND "
            "table_type = 'BASE TABLE' AND table_name NOT IN ('sink_offsets', 'alembic_version')"
        )]  # fmt: skip
        return {t: conn.execute(f"SELECT to_jsonb(x)::text FROM {t} x ORDER BY 1").fetchall() for t in names}


def next_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    """Per partition of every topic the sink reads: the offset after its last record (what
    the sink stores once it has read it all; transaction markers are not records)."""
    topics = [topic_name(t, settings) for t in SOURCE_TOPICS]
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "dry-run-sunk",
                         "isolation.level": "read_committed", "enable.partition.eof": True})  # fmt: skip
    try:
        meta = {t: consumer.list_topics(t, timeout=10).topics[t] for t in topics}
        parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in meta[t].partitions]
        consumer.assign(parts)
        out: dict[tuple[str, int], int] = {}
        open_parts = {(tp.topic, tp.partition) for tp in parts}
        while open_parts:
            for msg in consumer.consume(500, 1.0):
                where = (msg.topic(), msg.partition())
                if msg.error() is None:
                    out[where] = msg.offset() + 1
                elif msg.error().code() == KafkaError._PARTITION_EOF:
                    open_parts.discard(where)
        return out
    finally:
        consumer.close()


def sunk(settings: Settings) -> bool:
    """The sink has stored every record on its topics (offsets commit with the rows)."""
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT topic, partition, next_offset FROM sink_offsets").fetchall()
    stored = {(t, p): o for t, p, o in rows}
    return all(stored.get(k, 0) >= o for k, o in next_offsets(settings).items())


def post(client: TestClient, body: dict, query: str) -> dict:
    resp = client.post(f"/behavior/events?{query}", json=body, headers=H)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def test_dry_run_changes_nothing_and_equals_the_real_event(stack):
    client, settings = stack
    for amount in (60, 40):  # 100 + welcome 25 twice: 150, bronze; one welcome left
        post(client, {"customer_id": "ann", "type": "PURCHASE", "properties": {"amount": amount}},
             "wait=true&timeout=30")  # fmt: skip
    wait_for(lambda: sunk(settings), timeout=60, what="the sink to store ann's events and results")
    before, rows = ends(settings), tables(settings.database_url)
    event = {"customer_id": "ann", "type": "PURCHASE", "reference": "o-3", "properties": {"amount": 50}}
    dry = post(client, event, "dry_run=true&timeout=30")
    assert dry["state"]["found"] is True and dry["state"]["already_processed"] is False
    assert dry["points"] == 75.0  # spend 50 + the welcome's second use
    assert (dry["tier"]["before"]["id"], dry["tier"]["after"]["id"]) == ("bronze", "gold")
    assert [n["event"] for n in dry["notifications"]] == ["CUSTOMER_ACCUMULATION", "TIER_UPGRADE"]
    after = ends(settings)  # the reply committed: anything else of its transaction would show
    moved = {k: (before[k], v) for k, v in after.items() if v != before[k]}
    events_topic = topic_name(EVENTS_LOYALTY, settings)
    assert [k[0] for k in moved] == [events_topic]  # only the DRY_RUN command itself
    assert sum(v - before[k] for k, v in after.items()) == 1
    wait_for(lambda: sunk(settings), timeout=60, what="the sink to read past the DRY_RUN")
    assert tables(settings.database_url) == rows

    real = post(client, event, "wait=true&timeout=30")  # the state was untouched: same answer
    assert real["id"] == dry["event_id"]
    assert {k: real[k] for k in SHOWN} == {k: dry[k] for k in SHOWN}
    lines = [[{k: line[k] for k in LINE} for line in a["accumulations"]] for a in (real, dry)]
    assert lines[0] == lines[1] and len(lines[0]) == 2
    assert real["wallet"]["points"] == dry["wallet"]["points"] == 225.0
    assert real["wallet"]["lifetime"] == dry["wallet"]["lifetime"]
    assert real["tier"]["id"] == dry["tier"]["after"]["id"] == "gold"

    again = post(client, event, "dry_run=true&timeout=30")  # now processed: it would be a repeat
    assert again["state"]["already_processed"] is True and again["points"] == 75.0
