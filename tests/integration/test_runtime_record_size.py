"""A record too large for the broker (MSG_SIZE_TOO_LARGE) fails its own event, not the
partition: an oversize emit and an oversize store value are each dead-lettered once (reason
`processing`) while good records of every key keep flowing. The output topic's
max.message.bytes is 20,000: the runtime must read it at start, since the producer's own default
(1 MB) would let the record through to fail at commit, for the whole transaction, forever."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from plumbing.kafka_util import committed_reader
from plumbing.topic_admin import create, ensure_topics
from processors.runtime.api import Context, Record
from processors.runtime.changelog import changelog_topic
from processors.runtime.dead_letters import dlq_topic, parse_headers
from processors.runtime.example import INPUT, OUTPUT, CounterProcessor
from processors.runtime.runner import Runner, RuntimeOptions
from processors.runtime.testing import wait_for
from schemas.settings import Settings
from schemas.topics import TopicSpec, topic_name

pytestmark = pytest.mark.integration

LIMIT = 20_000


class BlobProcessor(CounterProcessor):
    """The counter, plus records asking it to emit or store `pad` bytes."""

    def process(self, ctx: Context, record: Record) -> None:
        pad = "x" * record.value.get("pad", 0)
        if record.value.get("where") == "store":
            ctx.store("totals").put(f"blob-{record.key}", {"pad": pad})
        elif record.value.get("where") == "emit":
            ctx.emit(OUTPUT, record.key, {"key": record.key, "pad": pad})
        super().process(ctx, record)


def read(settings: Settings, base: str, enough, timeout: float = 60) -> list:
    consumer = committed_reader(settings, base)
    got: list = []
    try:
        wait_for(lambda: (got.extend(m for m in consumer.consume(500, 0.2) if not m.error()) or enough(got)),
                 timeout=timeout, what=f"records on {base}")  # fmt: skip
    finally:
        consumer.close()
    return got


def test_oversize_emit_and_store_value_are_dead_lettered_and_others_flow(
    settings: Settings, tmp_path: Path
) -> None:
    limited = TopicSpec(OUTPUT, None, config={"max.message.bytes": str(LIMIT)})
    ensure_topics(settings, [TopicSpec(INPUT, None), limited])
    changelog = changelog_topic(topic_name("counter", settings), "totals")  # limited as well
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    config = {"cleanup.policy": "compact", "max.message.bytes": str(LIMIT)}
    create(admin, [NewTopic(changelog, settings.partitions, settings.replication_factor, config=config)])
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "partitioner": "murmur2_random"})  # fmt: skip
    keys = [f"k{i}" for i in range(12)]
    big = {"emit": b"big-emit", "store": b"big-store"}  # small records asking for big ones
    sent: dict[bytes, bytes] = {}
    for round_ in range(3):
        for key in keys:
            producer.produce(topic_name(INPUT, settings), orjson.dumps({"amount": 1}), key.encode())
        if round_ == 1:  # between good records of the same partitions
            for where, key in big.items():
                value = orjson.dumps({"amount": 1, "where": where, "pad": LIMIT + 5_000})
                producer.produce(topic_name(INPUT, settings), value, key)
                sent[key] = value
    assert producer.flush(30) == 0

    runner = Runner(BlobProcessor(), settings, RuntimeOptions(state_dir=tmp_path, instance_id="size")).start()
    try:
        outputs = read(settings, OUTPUT, lambda got: _last_counts(got, keys) == {k: 3 for k in keys})
        letters = read(settings, dlq_topic("counter"), lambda got: len(got) >= 2)
        assert runner.error is None and runner.healthy()
        assert runner.max_record_bytes <= LIMIT
    finally:
        runner.stop()
    assert sorted((m.key(), m.value()) for m in letters) == sorted(sent.items())  # each once
    for m in letters:
        headers = parse_headers(m.headers())
        assert headers["dlq.reason"] == "processing"
        assert headers["dlq.error.class"] == "RecordTooLarge"
        assert headers["dlq.error.message"].startswith("MSG_SIZE_TOO_LARGE")
    assert not any(m.key() in big.values() for m in outputs)  # no partial emit of a failed event
    assert all(len(m.value()) <= LIMIT for m in outputs)


def _last_counts(messages: list, keys: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for m in messages:
        value = orjson.loads(m.value())
        if value["key"] in keys:
            counts[value["key"]] = value["count"]
    return counts
