"""A failed transaction leaves no trace: neither its outputs nor its state changes."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Producer

from plumbing.topic_admin import ensure_topics
from processors.runtime.api import Context, Record
from processors.runtime.clock import ManualClock
from processors.runtime.example import INPUT, TOPICS, CounterProcessor
from processors.runtime.runner import Runner, RuntimeOptions
from schemas.topics import topic_name
from tests.reliability.harness import Outputs, assert_exactly_once

pytestmark = pytest.mark.integration


class FailsOnce(CounterProcessor):
    """Counts like the example, but the first record marked `boom` crashes the handler after
    it already emitted and wrote state for earlier records of the same transaction."""

    crashed = False

    def process(self, ctx: Context, record: Record) -> None:
        super().process(ctx, record)
        if record.value.get("boom") and not FailsOnce.crashed:
            FailsOnce.crashed = True
            raise RuntimeError("handler failure")


def wait_for_runner(runner: Runner, timeout: float = 60) -> None:
    runner._thread.join(timeout)
    assert not runner._thread.is_alive()


def test_handler_failure_aborts_the_transaction_and_a_restart_is_exact(settings, tmp_path):
    ensure_topics(settings, TOPICS)
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "partitioner": "murmur2_random"}
    )
    sent: dict[str, int] = {}
    for i in range(300):
        key = f"k{i % 3}"
        body = {"amount": 1, **({"boom": True} if i == 150 else {})}
        producer.produce(topic_name(INPUT, settings), orjson.dumps(body), key.encode())
        sent[key] = sent.get(key, 0) + 1
    producer.flush(30)
    options = RuntimeOptions(
        state_dir=tmp_path, instance_id="x", clock=ManualClock(), commit_interval_ms=10_000,
        error_policy="fail",  # stop on the failure (the default dead-letters the record)
    )  # fmt: skip
    crashed = Runner(FailsOnce(), settings, options).start()
    wait_for_runner(crashed)
    assert isinstance(crashed.error, RuntimeError)

    outputs = Outputs(settings)
    resumed = Runner(FailsOnce(), settings, options).start()
    outputs.wait_for(sent, timeout=60)
    outputs.poll(1.0)
    resumed.stop()
    assert resumed.error is None
    assert_exactly_once(outputs, sent)  # no output of the aborted transaction is visible
    outputs.close()
