"""The runner's Kafka client configs: what exactly-once and co-partitioning need of each."""

from __future__ import annotations

from processors.runtime.clients import consumer_config, producer_config
from processors.runtime.options import RuntimeOptions
from schemas.settings import Settings


def test_the_producer_is_transactional_with_a_stable_id_and_the_start_time_size_limit() -> None:
    opts = RuntimeOptions(instance_id="a", producer_config={"linger.ms": 5, "message.max.bytes": 9_999_999})
    cfg = producer_config(Settings(), "loyalty", opts, max_record_bytes=1_000)
    assert cfg["transactional.id"] == "loyalty-a"  # the same after a restart: fences the zombie
    assert cfg["enable.idempotence"] is True and cfg["acks"] == "all"
    assert cfg["partitioner"] == "murmur2_random"  # Java-compatible: co-partitioned with others
    assert cfg["linger.ms"] == 5  # producer_config overrides the defaults...
    assert cfg["message.max.bytes"] == 1_000  # ...but never the limit read at start


def test_the_consumer_reads_committed_and_commits_only_in_transactions() -> None:
    cfg = consumer_config(Settings(), "loyalty", RuntimeOptions(instance_id="a", session_timeout_ms=6_000))
    assert cfg["group.id"] == "loyalty" and cfg["isolation.level"] == "read_committed"
    assert cfg["enable.auto.commit"] is False and cfg["enable.auto.offset.store"] is False
    assert cfg["partition.assignment.strategy"] == "range"  # partition N of every input together
    assert cfg["heartbeat.interval.ms"] == 1_000
    assert "group.instance.id" not in cfg


def test_static_membership_and_overrides() -> None:
    opts = RuntimeOptions(instance_id="b", static_membership=True, consumer_config={"fetch.wait.max.ms": 10})
    cfg = consumer_config(Settings(), "loyalty", opts)
    assert cfg["group.instance.id"] == "loyalty-b" and cfg["fetch.wait.max.ms"] == 10
