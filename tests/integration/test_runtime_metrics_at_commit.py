"""Counters move when the Kafka transaction commits: a transaction the broker refused (here a
commit that fails, injected) or a handler that raised is replayed, and what it counted the first
time is dropped, so every metric ends equal to what the committed output holds."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from prometheus_client import REGISTRY, Counter

from plumbing.topic_admin import ensure_topics
from processors.runtime import runner as runner_module
from processors.runtime.api import Context, Record
from processors.runtime.example import INPUT, TOPICS, CounterProcessor
from processors.runtime.runner import Runner, RuntimeOptions
from processors.runtime.testing import wait_for
from schemas.settings import Settings
from schemas.topics import topic_name
from tests.reliability.harness import Outputs

pytestmark = pytest.mark.integration

HANDLED = Counter("test_at_commit_handled_total", "Records a test handler counted", ["key"])
ABORTABLE = KafkaError(KafkaError._STATE, "injected: the broker refused the commit", txn_requires_abort=True)


class Counting(CounterProcessor):
    """The example processor, counting each record through ctx.count; `boom` records raise."""

    name = "metricsatcommit"

    def process(self, ctx: Context, record: Record) -> None:
        ctx.count(HANDLED, record.key or "")
        if record.value.get("boom"):
            raise RuntimeError("a poison record")
        super().process(ctx, record)


class RefusesTheDeadLettersCommit(Producer):
    """A real transactional producer whose first commit after a dead letter fails (abortable),
    as a broker refusing the transaction would make it."""

    refused = 0

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.dead_lettered = False

    def produce(self, topic: str, *args, **kwargs) -> None:
        self.dead_lettered = self.dead_lettered or topic.endswith(".dlq")
        super().produce(topic, *args, **kwargs)

    def commit_transaction(self, *args) -> None:
        if self.dead_lettered and not RefusesTheDeadLettersCommit.refused:
            RefusesTheDeadLettersCommit.refused += 1
            raise KafkaException(ABORTABLE)
        super().commit_transaction(*args)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_aborted_transactions_count_nothing_and_the_committed_replay_counts_once(
    settings: Settings, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_topics(settings, TOPICS)
    RefusesTheDeadLettersCommit.refused = 0
    monkeypatch.setattr(runner_module, "Producer", RefusesTheDeadLettersCommit)
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "partitioner": "murmur2_random"}
    )
    sent: dict[str, int] = {}
    for i in range(40):
        key = f"k{i % 4}"
        body = {"amount": 1, **({"boom": True} if i == 21 else {})}
        producer.produce(topic_name(INPUT, settings), orjson.dumps(body), key.encode())
        sent[key] = sent.get(key, 0) + (0 if i == 21 else 1)
    assert producer.flush(30) == 0
    name = Counting.name
    before = {
        "in": sample("stream_records_in_total", processor=name, topic=INPUT),
        "dead": sample("stream_dead_letters_total", processor=name, reason="processing"),
        "handled": sum(sample("test_at_commit_handled_total", key=k) for k in sent),
    }

    options = RuntimeOptions(state_dir=tmp_path, instance_id="m", commit_interval_ms=2000)
    runner = Runner(Counting(), settings, options).start()
    outputs = Outputs(settings)
    try:
        outputs.wait_for(sent, timeout=90)
        dead = lambda: sample("stream_dead_letters_total", processor=name, reason="processing")  # noqa: E731
        wait_for(lambda: dead() > before["dead"], timeout=60, what="the dead letter to commit")
        assert runner.error is None
    finally:
        runner.stop()
        outputs.close()

    # the handler raised once (an aborted transaction) and a commit was refused (another one):
    # records were handled again, yet each counts once, as the committed output has them
    assert RefusesTheDeadLettersCommit.refused == 1
    assert sample("stream_transactions_aborted_total", processor=name) >= 2
    assert {k: v[-1] for k, v in outputs.counts.items()} == sent
    assert sample("stream_records_in_total", processor=name, topic=INPUT) - before["in"] == 39
    assert sample("stream_dead_letters_total", processor=name, reason="processing") - before["dead"] == 1
    handled = sum(sample("test_at_commit_handled_total", key=k) for k in sent) - before["handled"]
    assert handled == 39  # the poison record's own count rolled back with its transaction
