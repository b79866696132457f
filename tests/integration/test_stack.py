"""The local stack as a developer uses it: `loyalty stack up` twice, `down`, and the brokers.

These run the real CLI in subprocesses with their own LOYALTY_LOCAL_DIR and free ports, and
restrict the services to the webhook receiver so they test the stack itself, not other rooms.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from deploy.local import kafka
from deploy.local.paths import ROOT, pid_alive
from deploy.local.postgres import create_database
from processors.delivery.receiver import Receiver

pytestmark = pytest.mark.integration
SERVER_VARS = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "TOPIC_PREFIX")


@pytest.fixture
def stack_home() -> Iterator[Path]:
    """Under .local/ (not /tmp/pytest-of-root, mode 700): the PostgreSQL user must reach it."""
    home = ROOT / ".local" / f"test-stack-{uuid.uuid4().hex[:8]}"
    yield home
    shutil.rmtree(home, ignore_errors=True)


def loyalty(home: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run the `loyalty` CLI; fail the test with its output when it exits non-zero."""
    base = {k: v for k, v in os.environ.items() if k not in SERVER_VARS}
    full = base | {"LOYALTY_LOCAL_DIR": str(home), "LOYALTY_PORTS": "auto"} | (env or {})
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"loyalty {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def state(home: Path) -> dict:
    return json.loads((home / "stack.json").read_text())


def test_up_twice_keeps_services_and_down_stops_them(
    stack_home: Path, kafka_bootstrap: str, database_url: str
) -> None:
    db = create_database(database_url, f"stack_{uuid.uuid4().hex[:8]}")
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DATABASE_URL": db}
    env["TOPIC_PREFIX"] = f"s{uuid.uuid4().hex[:8]}."
    args = ("stack", "up", "--services", "receiver")

    out = loyalty(stack_home, *args, env=env)
    first = state(stack_home)
    pid = first["services"]["receiver"]["pid"]
    assert pid_alive(pid)
    assert first["kafka"] == {"bootstrap": kafka_bootstrap, "started": False}
    assert not (stack_home / "kafka").exists(), "no broker when KAFKA_BOOTSTRAP_SERVERS is set"
    assert "external" in out
    stack_env = (stack_home / "stack.env").read_text()
    assert f"KAFKA_BOOTSTRAP_SERVERS={kafka_bootstrap}" in stack_env
    assert "API_KEY=" in stack_env and "INGEST_URL=http://127.0.0.1:" in stack_env

    loyalty(stack_home, *args, env=env)
    assert state(stack_home)["services"]["receiver"]["pid"] == pid, "up twice keeps the process"
    assert "receiver    running" in loyalty(stack_home, "stack", "status", "--services", "receiver")

    loyalty(stack_home, "stack", "down", "--services", "receiver", env=env)
    assert not pid_alive(pid)
    assert not (stack_home / "run" / "receiver.pid").exists()


def test_up_without_servers_starts_own_kafka_and_postgres(stack_home: Path) -> None:
    loyalty(stack_home, "stack", "up", "--services", "receiver")
    st = state(stack_home)
    assert st["kafka"]["started"] and st["postgres"]["started"]
    broker = kafka.BrokerProcess(Path(st["kafka"]["home"]))
    assert broker.running() and broker.bootstrap == st["kafka"]["bootstrap"]
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert "events.loyalty" in admin.list_topics(timeout=10).topics
    with psycopg.connect(st["postgres"]["url"]) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("loyalty",)

    produce(broker.bootstrap, b"before restart")
    broker.stop()
    assert not broker.running()
    broker.start()  # same ports, same data (what the ingest fault tests rely on)
    assert broker.bootstrap == st["kafka"]["bootstrap"]
    assert consume_one(broker.bootstrap) == b"before restart"

    loyalty(stack_home, "stack", "down", "--services", "receiver")
    assert not broker.running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(st["postgres"]["url"], connect_timeout=2)


def produce(bootstrap: str, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce("events.tracking", value, key=b"k")
    assert producer.flush(30) == 0


def consume_one(bootstrap: str, timeout: float = 30.0) -> bytes | None:
    config = {"bootstrap.servers": bootstrap, "group.id": "g", "auto.offset.reset": "earliest"}
    consumer = Consumer(config)
    consumer.subscribe(["events.tracking"])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                return msg.value()
        return None
    finally:
        consumer.close()


def test_receiver_records_bodies(tmp_path: Path) -> None:
    import httpx

    out = tmp_path / "receiver.jsonl"
    with Receiver(out) as receiver:
        resp = httpx.post(receiver.url("/hook"), json={"event": "X", "data": {"a": 1}})
        assert resp.status_code == 200
        assert receiver.bodies == [{"event": "X", "data": {"a": 1}}]
    line = json.loads(out.read_text())
    assert line["path"] == "/hook" and line["body"]["event"] == "X"
