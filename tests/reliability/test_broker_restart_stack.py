"""Broker restarts are survived by the real processors (issue 12 item 7): the router, loyalty,
audiences and journeys run as OS processes (`loyalty process <name>`, under the local stack's
supervisor as `make up` runs them) on the test's own broker while JSON purchases stream into
events.inbound. The broker is stopped three times for 30-42 s
(SIGKILL, SIGTERM, SIGKILL: each longer than the transaction timeout, so the coordinator aborts
the open transactions and fences the producers' epochs). With no restart by hand, every
processor ends alive and healthy (recovered in place, or exited by its watchdog and restarted
by the supervisor, as compose and Kubernetes would), every delivered purchase has exactly one
result, and every wallet holds exactly the sum of that customer's delivered purchases.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from deploy.local.kafka import BrokerProcess, test_broker_process
from plumbing.config_table import publish_program
from plumbing.kafka_util import committed_reader
from plumbing.topic_admin import ensure_topics
from processors.runtime.testing import wait_for
from schemas.codec import decode
from schemas.intake import event_id
from schemas.program import Campaign, EventType, Program
from schemas.settings import Settings
from schemas.topics import EVENTS_INBOUND, LOYALTY_RESULTS, topic_name
from tests.reliability.harness import healthz, latest_metrics_port

# run apart (`make test-broker-restarts`, .ci/broker_restarts.sh, a .ci/run stage): minutes of outages
pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.broker_restart,
              pytest.mark.timeout(1200)]  # fmt: skip

ROOT = Path(__file__).resolve().parents[2]
PROCESSORS = ["router", "loyalty", "audiences", "journeys"]
OUTAGES = [("kill", 30.0), ("stop", 36.0), ("kill", 42.0)]  # how, seconds down
CUSTOMERS = 30
PROGRAM = Program(
    event_types=[EventType(name="PURCHASE", schema={"type": "object", "properties": {
        "amount": {"type": "number", "minimum": 0}}})],  # fmt: skip
    campaigns=[Campaign(id="base", condition="properties.amount > 0", formula="properties.amount")],
)


@pytest.fixture
def own_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[BrokerProcess, Settings]]:
    with test_broker_process() as broker:
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
        monkeypatch.setenv("TOPIC_PREFIX", f"s{uuid.uuid4().hex[:6]}.")
        monkeypatch.setenv("TOPIC_PARTITIONS", "3")
        settings = Settings.from_env()
        ensure_topics(settings)
        yield broker, settings


class Service:
    """`loyalty process <name>` as an OS process, its log in a file."""

    def __init__(self, name: str, settings: Settings, tmp: Path) -> None:
        self.name, self.log_path = name, tmp / f"{name}.log"
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
               "TOPIC_PREFIX": settings.topic_prefix,
               "TOPIC_PARTITIONS": str(settings.partitions)}  # fmt: skip
        args = ["process", name, "--state-dir", str(tmp / "state"), "--instance-id", f"br-{name}",
                "--metrics-port", "0", "--static-membership"]  # fmt: skip
        cmd = [sys.executable, "-m", "deploy.local.supervise", "deploy.cli", *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env,
                                     stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT)  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def restarts(self) -> int:
        return self.log().count('"msg":"service exited; restarting it"')

    def health(self) -> int:
        """/healthz of the latest run (a restarted processor serves on a new port)."""
        return healthz(latest_metrics_port(self.log()))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Purchases(threading.Thread):
    """JSON purchases to events.inbound at `rate`/s until stopped; a purchase counts once the
    broker acknowledged it (the broker goes away meanwhile)."""

    def __init__(self, settings: Settings, rate: int) -> None:
        super().__init__(daemon=True)
        self.settings, self.rate = settings, rate
        self.done = threading.Event()
        self.delivered: dict[str, tuple[str, int]] = {}  # event id -> (customer, amount)
        self.errors: list[str] = []

    def _ack(self, err, msg) -> None:
        if err is not None:
            self.errors.append(str(err))
            return
        body = orjson.loads(msg.value())
        self.delivered[event_id(body["customer_id"], body["reference"])] = (
            body["customer_id"], body["properties"]["amount"])  # fmt: skip

    def run(self) -> None:
        producer = Producer({"bootstrap.servers": self.settings.kafka_bootstrap_servers,
                             "partitioner": "murmur2_random", "enable.idempotence": True,
                             "linger.ms": 5, "message.timeout.ms": 600_000})  # fmt: skip
        topic = topic_name(EVENTS_INBOUND, self.settings)
        started, i = time.monotonic(), 0
        while not self.done.is_set():
            for _ in range(max(0, int((time.monotonic() - started) * self.rate) - i)):
                customer = f"c{i % CUSTOMERS}"
                body = {"customer_id": customer, "type": "PURCHASE", "reference": f"order-{i}",
                        "properties": {"amount": 1 + i % 7}}  # fmt: skip
                producer.produce(topic, orjson.dumps(body), customer.encode(), on_delivery=self._ack)
                i += 1
            producer.poll(0.05)
        assert producer.flush(300) == 0


def read_results(settings: Settings, want: set[str], timeout: float) -> list[dict]:
    """Committed loyalty.results until every event in `want` has one (or the timeout)."""
    consumer = committed_reader(settings, LOYALTY_RESULTS)
    records: list[dict] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while not want <= seen and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if not msg.error():
                    result = decode(msg.value(), "Result")
                    records.append(result)
                    seen.add(result["event_id"])
    finally:
        consumer.close()
    return records


def test_broker_restarts_survived_by_every_processor_with_exact_wallets(own_broker, tmp_path: Path) -> None:
    broker, settings = own_broker
    publish_program(settings, PROGRAM)
    services = [Service(name, settings, tmp_path) for name in PROCESSORS]
    load = Purchases(settings, rate=60)
    try:
        for service in services:
            wait_for(lambda s=service: s.health() == 200, timeout=90, what=f"{service.name} healthy")
        load.start()
        for how, down in OUTAGES:
            wait_for(lambda: len(load.delivered) > 0, timeout=60, what="purchases flowing")
            time.sleep(3.0)  # let them work mid-transaction: the fault lands at an arbitrary moment
            broker.kill() if how == "kill" else broker.stop()
            time.sleep(down)  # the outage itself (fault injection, not a wait for a condition)
            broker.start()
            for service in services:
                assert service.alive(), f"{service.name} exited after the {how}: {service.log()[-3000:]}"
                wait_for(lambda s=service: s.health() == 200, timeout=180,
                         what=f"{service.name} healthy again after the {how}")  # fmt: skip
        time.sleep(3.0)  # a little load after the last outage too
        load.done.set()
        load.join(300)
        assert not load.errors, load.errors[:5]
        results = read_results(settings, set(load.delivered), timeout=180)
        per_event: dict[str, int] = defaultdict(int)
        wallets: dict[str, float] = defaultdict(float)
        expected: dict[str, float] = defaultdict(float)
        for result in results:
            per_event[result["event_id"]] += 1
            if result["event_id"] in load.delivered:
                lifetime = result["wallet"]["lifetime"]
                wallets[result["customer_id"]] = max(wallets[result["customer_id"]], lifetime)
        for customer, amount in load.delivered.values():
            expected[customer] += amount
        missing = set(load.delivered) - set(per_event)
        assert not missing, f"{len(missing)} of {len(load.delivered)} purchases have no result"
        assert {n for e, n in per_event.items() if e in load.delivered} == {1}, "one result per event"
        assert dict(wallets) == dict(expected)
        for service in services:
            assert service.alive(), f"{service.name} exited: {service.log()[-3000:]}"
            # awaited, not sampled: a processor whose loop got stuck in librdkafka (seen in
            # send_offsets_to_transaction) answers 503 until its hard watchdog exits it (after
            # stall_timeout_s + 30 s) and the supervisor has started it again
            wait_for(lambda s=service: s.health() == 200, timeout=300,
                     what=f"{service.name} healthy at the end")  # fmt: skip
        print("supervisor restarts:", {s.name: s.restarts() for s in services})
    finally:
        load.done.set()
        for service in services:
            service.stop()
