"""A broker restart is survived: the counter processor (a real OS process, under the local
stack's supervisor as in `make up`) runs through three broker outages under load (SIGKILL,
SIGTERM, SIGKILL; two of them longer than the transaction timeout, so the coordinator aborts
the open transaction and bumps the producer's epoch) and, with no restart by hand, ends healthy
with every key's outputs exactly 1..n. The processor recovers in place (producer renewal,
rewind); when it cannot (its watchdog gives up, a fenced consumer), it exits and the supervisor
restarts it, which is what compose and Kubernetes do in deployment. The broker is the test's
own (deploy.local.kafka.test_broker_process), not the shared one.
"""

from __future__ import annotations

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
from plumbing.topic_admin import ensure_topics
from processors.runtime.example import INPUT, TOPICS
from processors.runtime.testing import wait_for
from schemas.settings import Settings
from schemas.topics import topic_name
from tests.reliability.harness import (
    Outputs,
    ProcessorProcess,
    assert_exactly_once,
    explain,
    healthz,
    latest_metrics_port,
)

# run apart (`make test-broker-restarts`, .ci/broker_restarts.sh, a .ci/run stage): minutes of outages
pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.broker_restart,
              pytest.mark.timeout(1200)]  # fmt: skip

OUTAGES = [("kill", 12.0), ("stop", 5.0), ("kill", 12.0)]  # how, seconds down


@pytest.fixture
def own_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[BrokerProcess, Settings]]:
    with test_broker_process() as broker:
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
        monkeypatch.setenv("TOPIC_PREFIX", f"b{uuid.uuid4().hex[:6]}.")
        monkeypatch.setenv("TOPIC_PARTITIONS", "3")
        settings = Settings.from_env()
        ensure_topics(settings)
        ensure_topics(settings, TOPICS)
        yield broker, settings


class DeliveredLoad(threading.Thread):
    """`rate` records/s over `keys` keys for `seconds`, counting only delivered records (the
    broker goes away meanwhile: a record counts once the broker acknowledged it). Each record
    carries a unique "seq" (the counter passes it through to its output), and every
    acknowledgement is kept as (seq, partition, offset), so a failure can be told apart:
    one send stored twice, or one input processed twice."""

    def __init__(self, settings: Settings, seconds: float, keys: int, rate: int) -> None:
        super().__init__(daemon=True)
        self.settings, self.seconds, self.keys, self.rate = settings, seconds, keys, rate
        self.sent: dict[str, int] = defaultdict(int)
        self.acked: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        self.errors: list[str] = []
        self.undelivered = -1  # records neither delivered nor failed at the end (-1: not ended)

    def _delivered(self, err, msg) -> None:
        if err is None:
            key = msg.key().decode()
            self.sent[key] += 1
            self.acked[key].append((orjson.loads(msg.value())["seq"], msg.partition(), msg.offset()))
        else:
            self.errors.append(str(err))

    def run(self) -> None:
        producer = Producer({"bootstrap.servers": self.settings.kafka_bootstrap_servers,
                             "partitioner": "murmur2_random", "enable.idempotence": True,
                             "linger.ms": 5, "message.timeout.ms": 300_000,
                             # metadata every 10 s, as the runtime's consumer: after an outage
                             # 6,555 records once sat undelivered past a 240 s flush, the last
                             # word of this producer "new leader-1 not found in cache"
                             "topic.metadata.refresh.interval.ms": 10_000})  # fmt: skip
        topic = topic_name(INPUT, self.settings)
        started = time.monotonic()
        i = 0
        while (elapsed := time.monotonic() - started) < self.seconds:
            for _ in range(max(0, int(elapsed * self.rate) - i)):
                value = orjson.dumps({"amount": 1, "seq": i})
                producer.produce(topic, value, f"key-{i % self.keys}".encode(), on_delivery=self._delivered)
                i += 1
            producer.poll(0.05)  # serves delivery reports; paces the loop
        # past message.timeout.ms: every record is then delivered or failed (in self.errors);
        # the test asserts on the result (an assert in this thread would only warn)
        self.undelivered = producer.flush(330)


def test_broker_kill_and_restart_under_load_is_survived_exactly_once(own_broker, tmp_path: Path) -> None:
    broker, settings = own_broker
    proc = ProcessorProcess(settings, tmp_path / "state", "a", tmp_path, supervised=True).start()
    port = wait_for(lambda: latest_metrics_port(proc.log()), timeout=60, what="the processor's metrics port")
    wait_for(lambda: healthz(port) == 200, timeout=60, what="the processor healthy")
    load = DeliveredLoad(settings, seconds=75, keys=40, rate=200)
    load.start()
    for how, down in OUTAGES:
        wait_for(lambda: sum(load.sent.values()) > 0, what="records flowing")
        time.sleep(2.0)  # let it work mid-transaction: the fault lands at an arbitrary moment
        broker.kill() if how == "kill" else broker.stop()
        time.sleep(down)  # the outage itself (fault injection, not a wait for a condition)
        broker.start()
        assert proc.proc is not None and proc.proc.poll() is None, proc.log()[-3000:]
        wait_for(lambda: healthz(latest_metrics_port(proc.log())) == 200, timeout=180,
                 what=f"healthy again after the {how}")  # fmt: skip
    load.join(400)
    assert not load.is_alive() and load.undelivered == 0, f"load producer: {load.undelivered} undelivered"
    assert not load.errors, load.errors[:5]
    outputs = Outputs(settings)  # read only now: a reader's rebalance mid-outage would re-read
    try:
        # generous: a processor whose consumer the group never assigned again exits after its
        # stall_timeout_s (120 s), then restarts, restores and catches up
        complete = outputs.wait_for(load.sent, timeout=300)
        exact = all(outputs.counts.get(k) == list(range(1, n + 1)) for k, n in load.sent.items())
        warnings = [line[:300] for line in proc.log().splitlines() if '"level":"warning"' in line
                    or '"level":"error"' in line or "restarting" in line]  # fmt: skip
        assert complete and exact, explain(settings, outputs, load.acked) + "\n" + "\n".join(warnings[-60:])
        assert_exactly_once(outputs, load.sent)
    finally:
        outputs.close()
    assert proc.proc.poll() is None, "the processor exited: " + proc.log()[-3000:]
    wait_for(lambda: healthz(latest_metrics_port(proc.log())) == 200, timeout=300,
             what="healthy at the end")  # awaited: a stuck loop is exited by the hard watchdog  # fmt: skip
    assert proc.terminate() == 0
    restarts = proc.log().count('"msg":"service exited; restarting it"')
    print(f"the supervisor restarted the processor {restarts} time(s)")
