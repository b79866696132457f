"""Changelog topics: creating them, and restoring a partition's store from one.

Each store of a processor has a compacted `<group>-<store>-changelog` topic with the same
partition count as the inputs. A store's RocksDB keeps the changelog offset it has applied
(the checkpoint); restoring reads from there to the end (read_committed), so an aborted
transaction's records are never applied. A checkpoint outside the topic's offsets (topic
recreated or truncated) is not trusted: the store is wiped and rebuilt from the beginning.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from deploy.topics import create
from processors.runtime import observability as m
from processors.runtime.kafka_util import watermarks
from processors.runtime.store import RocksBackend
from schemas.settings import Settings

log = logging.getLogger(__name__)


def changelog_topic(group: str, store: str) -> str:
    return f"{group}-{store}-changelog"


def ensure_changelogs(settings: Settings, group: str, stores: list[str]) -> None:
    """Create the missing changelog topics (compacted, co-partitioned with the inputs)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    existing = set(admin.list_topics(timeout=30).topics)
    config = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
    create(
        admin,
        [
            NewTopic(
                changelog_topic(group, s), settings.partitions, settings.replication_factor, config=config
            )
            for s in stores
            if changelog_topic(group, s) not in existing
        ],
    )


def restore(
    settings: Settings, group: str, store: str, partition: int, path: Path, processor: str
) -> RocksBackend:
    """Open the store at `path` and bring it up to the end of its changelog partition."""
    started = time.monotonic()
    backend = RocksBackend(path)
    restorer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"{group}-restore",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        tp = TopicPartition(changelog_topic(group, store), partition)
        low, high = watermarks(restorer, tp)
        checkpoint = backend.checkpoint()
        if checkpoint is not None and not (low - 1 <= checkpoint < high):
            log.warning(
                "store checkpoint untrusted, rebuilding from changelog",
                extra={"store": store, "partition": partition, "checkpoint": checkpoint, "high": high},
            )
            backend.close()
            RocksBackend.wipe(path)
            backend = RocksBackend(path)
            checkpoint = None
        start = checkpoint + 1 if checkpoint is not None else low
        restored = _read_to_end(restorer, tp, start, high, backend) if start < high else 0
    finally:
        restorer.close()
    seconds = time.monotonic() - started
    m.RESTORE_RECORDS.labels(processor, store).inc(restored)
    m.RESTORE_SECONDS.labels(processor, store).inc(seconds)
    if restored:
        log.info(
            "store restored",
            extra={"store": store, "partition": partition, "records": restored, "seconds": round(seconds, 3)},
        )
    return backend


def _read_to_end(restorer: Consumer, tp: TopicPartition, start: int, high: int, backend: RocksBackend) -> int:
    """Apply committed changelog records from `start` until the partition's end."""
    restorer.assign([TopicPartition(tp.topic, tp.partition, start)])
    count = 0
    last = -1
    while True:
        batch: dict[bytes, bytes | None] = {}
        eof = False
        for msg in restorer.consume(1000, 1.0):
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(msg.error())
                eof = True
                continue
            batch[msg.key()] = msg.value()
            last = msg.offset()
        if batch:
            backend.write(batch, last)  # data and checkpoint in one atomic write
            count += len(batch)
        if eof or (last >= high - 1 and restorer.position([tp])[0].offset >= high):
            return count
