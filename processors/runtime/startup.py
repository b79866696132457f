"""Checks before a processor starts: co-partitioned topics, and the largest record it may write."""

from __future__ import annotations

import logging

from confluent_kafka import Consumer

from plumbing.kafka_util import partitions_of
from processors.runtime.limits import record_limit
from processors.runtime.options import RuntimeOptions
from schemas.settings import Settings

log = logging.getLogger(__name__)


class PartitionMismatch(RuntimeError):
    """Co-partitioned topics disagree on their partition count: the processor must not start."""


def check_copartitioned(settings: Settings, topics: list[str]) -> None:
    """Refuse to start unless every input (and changelog) has `settings.partitions` partitions:
    task N owns partition N of each, so a key would otherwise meet another key's state."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "check"})
    try:
        counts = {topic: len(partitions_of(consumer, topic)) for topic in topics}
    finally:
        consumer.close()
    wrong = {t: n for t, n in counts.items() if n != settings.partitions}
    if wrong:
        found = ", ".join(f"{t} has {n}" for t, n in counts.items())
        raise PartitionMismatch(
            f"co-partitioned topics must all have TOPIC_PARTITIONS={settings.partitions} partitions: "
            f"{found}; recreate the topics (or set TOPIC_PARTITIONS) so that they agree"
        )


def written_limit(settings: Settings, opts: RuntimeOptions, written: list[str]) -> int:
    """message.max.bytes at or below every written topic's limit (see limits.py)."""
    configured = opts.max_record_bytes or opts.producer_config.get("message.max.bytes")
    limit = record_limit(settings, written, int(configured) if configured else None)
    log.info("record size limit", extra={"max_record_bytes": limit})
    return limit
