"""The runner's Kafka client configs: one transactional producer and one read_committed consumer
per process. Pure functions of the settings and options, so a test can read them."""

from __future__ import annotations

from typing import Any

from processors.runtime.options import RuntimeOptions
from schemas.settings import Settings


def transactional_id(group: str, opts: RuntimeOptions) -> str:
    """Stable across restarts: a restarted instance fences its zombie and aborts its open
    transaction at once."""
    return f"{group}-{opts.instance_id}"


def producer_config(
    settings: Settings, group: str, opts: RuntimeOptions, max_record_bytes: int
) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "transactional.id": transactional_id(group, opts),
        "transaction.timeout.ms": opts.transaction_timeout_ms,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 50,  # records are visible only at commit, and commit flushes at once
        "partitioner": "murmur2_random",
        "queue.buffering.max.messages": 500_000,
        **opts.producer_config,
        "message.max.bytes": max_record_bytes,  # oversize fails in produce()
    }


def consumer_config(settings: Settings, group: str, opts: RuntimeOptions) -> dict[str, Any]:
    cfg = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        "session.timeout.ms": opts.session_timeout_ms,
        "heartbeat.interval.ms": max(500, opts.session_timeout_ms // 6),
        "max.poll.interval.ms": 300_000,
        "fetch.wait.max.ms": 50,
        # librdkafka (2.16) joins only after a metadata response for the subscription; one
        # lost to a broker SIGKILL is not asked again before the next periodic refresh
        # (300 s by default), and the consumer waits out of its group until then
        "topic.metadata.refresh.interval.ms": 10_000,
        **opts.consumer_config,
    }
    if opts.static_membership:
        cfg["group.instance.id"] = f"{group}-{opts.instance_id}"
    return cfg
