"""Badges are awarded exactly once on real Kafka: `loyalty process loyalty` is killed with
SIGKILL while purchases arrive, restarted on an empty state dir (achievement progress comes back
from the changelogs), and then every purchase is delivered again with the same id. A repeatable
achievement of 10 purchases over 30 purchases per customer gives each customer exactly 3
BADGE_AWARDED webhooks (committed), never a 4th from a replay or a re-delivery."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from plumbing.config_table import publish_program
from plumbing.kafka_util import committed_reader
from schemas.codec import decode, encode
from schemas.ids import name_uuid
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import EVENTS_LOYALTY, NOTIFICATIONS, topic_name
from tests.integration.test_loyalty_kafka import Results, send
from tests.integration.test_loyalty_kill9 import start

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
CUSTOMERS = [f"b{i}" for i in range(12)]
PURCHASES = 30  # 360 events at 60/s: the kill lands after ~100 results
PROGRAM = Program.model_validate(
    {
        "badges": [{"id": "tenner", "name": "Ten purchases"}],
        "achievements": [
            {"id": "ten", "triggers": ["PURCHASE"], "target": 10, "repeatable": True, "badge_id": "tenner"}
        ],
        "campaigns": [{"id": "base", "condition": "properties.amount > 0", "formula": "properties.amount"}],
    }
)


def event_id(customer: str, n: int) -> str:
    return name_uuid(f"badge-test:{customer}:{n}")


def produce(settings: Settings, sent: list[str], per_second: float) -> None:
    """Every customer buys PURCHASES times with deterministic ids (so they can be re-sent)."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 5})
    topic = topic_name(EVENTS_LOYALTY, settings)
    began = time.monotonic()
    for n in range(1, PURCHASES + 1):
        for c in CUSTOMERS:
            now = int(time.time() * 1000)
            value = {
                "id": event_id(c, n),
                "customer_id": c,
                "type": "PURCHASE",
                "issued_at": now,
                "received_at": now,
                "properties": orjson.dumps({"amount": n}).decode(),
            }
            producer.produce(topic, encode("Event", value), c.encode())
            sent.append(value["id"])
            producer.poll(0)
            time.sleep(max(0.0, began + len(sent) / per_second - time.monotonic()))
    assert producer.flush(30) == 0


def awarded(settings: Settings, timeout: float) -> Counter[str]:
    """BADGE_AWARDED webhooks per customer: every committed notification up to the end of the
    topic as it is now (the last stable offset of each partition), so an extra one is seen."""
    reader = committed_reader(settings, NOTIFICATIONS)
    ids: dict[str, str] = {}
    ends = {tp.partition: reader.get_watermark_offsets(tp, timeout=10)[1] for tp in reader.assignment()}
    seen = {p: 0 for p in ends}
    deadline = time.monotonic() + timeout
    try:
        while any(seen[p] < ends[p] for p in ends):
            assert time.monotonic() < deadline, f"notifications not read to the end: {seen} of {ends}"
            for msg in reader.consume(500, 0.2):
                if msg.error():
                    continue
                seen[msg.partition()] = msg.offset() + 1
                note = decode(msg.value(), "Notification")
                if note["event"] == "BADGE_AWARDED":
                    ids[note["id"]] = note["customer_id"]
            for tp in reader.position(reader.assignment()):  # transaction markers move it too
                seen[tp.partition] = max(seen[tp.partition], tp.offset)
    finally:
        reader.close()
    return Counter(ids.values())


def test_a_badge_is_awarded_once_under_kill_9_and_redelivery(settings: Settings, tmp_path: Path) -> None:
    publish_program(settings, PROGRAM)
    results = Results(settings)
    log = tmp_path / "processor.log"
    proc = start(settings, tmp_path / "state-1", log)
    sent: list[str] = []
    producer = threading.Thread(target=produce, args=(settings, sent, 60))
    try:
        warm = send(settings, "warm-up", properties={"amount": 1})
        results.wait_for(lambda rs: [r for r in rs if r["event_id"] == warm], timeout=90)
        producer.start()
        results.wait_for(lambda rs: len(rs) >= 100, timeout=90)
        proc.send_signal(signal.SIGKILL)  # under load: most likely inside a transaction
        proc.wait(10)
        assert producer.is_alive(), "the kill must land while purchases are still arriving"
        proc = start(settings, tmp_path / "state-2", log)  # empty disk: state from changelogs
        producer.join(60)
        produce(settings, sent, 500)  # every purchase delivered again: answered as a duplicate
        ids = {event_id(c, n) for c in CUSTOMERS for n in range(1, PURCHASES + 1)}
        count = Counter(sent)
        assert set(count) == ids and set(count.values()) == {2}
        done = results.wait_for(
            lambda rs: len([r for r in rs if r["event_id"] in ids]) >= len(sent) and rs, timeout=180
        )
        mine = [r for r in done if r["event_id"] in ids]
        applied = Counter(r["event_id"] for r in mine if not r["detail"]["duplicate"])
        assert set(applied) == ids and set(applied.values()) == {1}, "each purchase applied once"
        changes = Counter(
            r["customer_id"]
            for r in mine
            if not r["detail"]["duplicate"]
            for b in r["detail"].get("badges", [])
            if b["action"] == "AWARDED"
        )
        assert changes == {c: 3 for c in CUSTOMERS}
        assert awarded(settings, timeout=60) == {c: 3 for c in CUSTOMERS}
    finally:
        proc.kill()
        proc.wait(10)
        results.consumer.close()
