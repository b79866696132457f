"""`loyalty process loyalty` killed with SIGKILL under load, then restarted on an empty state dir:
every wallet ends exactly as if each event had been applied once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from plumbing.config_table import publish_program
from schemas.codec import encode
from schemas.settings import Settings
from schemas.topics import EVENTS_LOYALTY, topic_name
from tests.integration.test_loyalty_kafka import PROGRAM, Results, send

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = [f"k{i}" for i in range(20)]
PURCHASES = 30  # 600 events at 100/s: the kill lands after ~100 results


def start(settings: Settings, state_dir: Path, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "TOPIC_PREFIX": settings.topic_prefix,
        "TOPIC_PARTITIONS": str(settings.partitions),
    }
    args = ["process", "loyalty", "--state-dir", str(state_dir), "--instance-id", "kill9"]
    return subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", *args, "--metrics-port", "0", "--static-membership"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def produce_steadily(settings: Settings, sent: list[str], per_second: float) -> None:
    """Every customer buys PURCHASES times (amount = round number), paced so the kill lands
    in the middle of the load."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 5})
    topic = topic_name(EVENTS_LOYALTY, settings)
    began = time.monotonic()
    for n in range(1, PURCHASES + 1):
        for c in CUSTOMERS:
            now = int(time.time() * 1000)
            event_id = str(uuid.uuid4())
            value = {
                "id": event_id,
                "customer_id": c,
                "type": "PURCHASE",
                "issued_at": now,
                "received_at": now,
                "properties": orjson.dumps({"amount": n}).decode(),
            }
            producer.produce(topic, encode("Event", value), c.encode())
            sent.append(event_id)
            producer.poll(0)
            time.sleep(max(0.0, began + len(sent) / per_second - time.monotonic()))
    assert producer.flush(30) == 0


def test_wallets_exact_after_kill_9(settings: Settings, tmp_path: Path) -> None:
    publish_program(settings, PROGRAM)
    results = Results(settings)
    expected = {c: PURCHASES * (PURCHASES + 1) / 2 for c in CUSTOMERS}
    sent: list[str] = []
    log = tmp_path / "processor.log"
    proc = start(settings, tmp_path / "state-1", log)
    producer = threading.Thread(target=produce_steadily, args=(settings, sent, 100))
    try:
        warm = send(settings, "warm-up", properties={"amount": 1})
        results.wait_for(lambda rs: [r for r in rs if r["event_id"] == warm], timeout=90)
        producer.start()
        results.wait_for(lambda rs: len(rs) >= 100, timeout=90)
        proc.send_signal(signal.SIGKILL)  # under load: most likely inside a transaction
        proc.wait(10)
        assert producer.is_alive(), "the kill must land while events are still arriving"
        proc = start(settings, tmp_path / "state-2", log)  # empty disk: state from changelogs
        producer.join(60)
        ids = set(sent)
        done = results.wait_for(lambda rs: {r["event_id"] for r in rs} >= ids and rs, timeout=120)
        done = [r for r in done if r["customer_id"] in expected]
        per_event: dict[str, int] = {}
        for r in done:
            per_event[r["event_id"]] = per_event.get(r["event_id"], 0) + 1
        assert set(per_event.values()) == {1}, "each event's result is committed exactly once"
        lifetime: dict[str, float] = {}
        for r in done:
            customer = r["customer_id"]
            lifetime[customer] = max(lifetime.get(customer, 0), r["wallet"]["lifetime"])
        assert lifetime == expected
    finally:
        proc.kill()
        proc.wait(10)
        results.consumer.close()
