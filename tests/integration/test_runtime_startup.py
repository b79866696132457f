"""Start-up checks: co-partitioned topics agree on their partition count, and the TestDriver's
murmur2 puts a key on the partition a real murmur2_random producer does."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from plumbing.topic_admin import create, ensure_topics
from processors.runtime.example import INPUT, TOPICS, CounterProcessor
from processors.runtime.partitioner import partition_for
from processors.runtime.runner import PartitionMismatch, Runner, RuntimeOptions
from schemas.topics import topic_name

pytestmark = pytest.mark.integration


class TwoInputs(CounterProcessor):
    inputs = [INPUT, "counter.extra"]


def test_a_processor_whose_inputs_disagree_on_partitions_refuses_to_start(settings, tmp_path):
    ensure_topics(settings, TOPICS)  # counter.input with settings.partitions (3)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    create(admin, [NewTopic(topic_name("counter.extra", settings), 2, 1)])
    runner = Runner(TwoInputs(), settings, RuntimeOptions(state_dir=tmp_path, instance_id="x"))
    with pytest.raises(PartitionMismatch) as raised:
        runner.run()
    message = str(raised.value)
    assert "TOPIC_PARTITIONS=3" in message
    assert f"{topic_name('counter.extra', settings)} has 2" in message
    assert f"{topic_name(INPUT, settings)} has 3" in message


def test_murmur2_matches_a_real_murmur2_random_producer(settings):
    ensure_topics(settings, TOPICS)
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "partitioner": "murmur2_random"}
    )
    landed: dict[str, int] = {}
    keys = [f"customer-{i}" for i in range(200)] + ["a", "ab", "abc", "é-ünïcode"]

    def delivered(err, msg) -> None:
        assert err is None
        landed[msg.key().decode()] = msg.partition()

    for key in keys:
        producer.produce(topic_name(INPUT, settings), b"{}", key.encode(), on_delivery=delivered)
    producer.flush(30)
    assert landed == {key: partition_for(key.encode(), settings.partitions) for key in keys}
    assert len(set(landed.values())) == settings.partitions  # the keys spread over all of them
