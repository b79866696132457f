"""`loyalty deliveries replay`: re-send dead-lettered deliveries.

Reads delivery.dlq from the replay group's committed position up to the end seen at start and
puts each entry back on `notifications` pinned to its endpoint (attempt 0), so the delivery
service sends it again with the same webhook-id. Offsets are committed afterwards, so an entry
is replayed once per group; `--endpoint` uses its own group, `--from-beginning` replays all.
"""

from __future__ import annotations

import argparse
import logging
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from schemas.codec import decode, encode
from schemas.settings import Settings
from schemas.topics import DELIVERY_DLQ, NOTIFICATIONS, topic_name

log = logging.getLogger(__name__)


def replay(
    settings: Settings,
    endpoint: str | None = None,
    from_beginning: bool = False,
    dry_run: bool = False,
) -> int:
    """Re-queue DLQ entries (optionally of one endpoint); returns how many."""
    group = f"delivery-replay-{endpoint}" if endpoint else "delivery-replay"
    if from_beginning or dry_run:
        group = f"{group}-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "acks": "all",
            "partitioner": "murmur2_random",
        }
    )
    try:
        entries, positions = _read_all(consumer, topic_name(DELIVERY_DLQ, settings))
        chosen = [e for e in entries if endpoint is None or e["endpoint_id"] == endpoint]
        if dry_run:
            for e in chosen:
                print(e["id"], e["endpoint_id"], e["event"], e["attempt"], e["last_error"])
            return len(chosen)
        for e in chosen:
            value = {**e, "attempt": 0, "not_before": None}
            producer.produce(
                topic_name(NOTIFICATIONS, settings),
                key=e["customer_id"].encode(),
                value=encode("Notification", value),
            )
        if producer.flush(30):
            raise RuntimeError("replay not fully written; nothing committed")
        if positions:
            consumer.commit(offsets=positions, asynchronous=False)
        return len(chosen)
    finally:
        consumer.close()


def _read_all(consumer: Consumer, topic: str) -> tuple[list[dict], list[TopicPartition]]:
    """Every entry between the committed offsets and the high watermarks taken now."""
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    tps = [TopicPartition(topic, p) for p in parts]
    committed = consumer.committed(tps, timeout=10)
    ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
    start = {c.partition: c.offset if c.offset >= 0 else OFFSET_BEGINNING for c in committed}
    todo = {p for p in parts if ends[p] > max(start[p], 0)}
    consumer.assign([TopicPartition(topic, p, start[p]) for p in todo])
    entries: list[dict] = []
    while todo:
        msg = consumer.poll(5)
        if msg is None:
            raise TimeoutError(f"DLQ read stalled; partitions left {sorted(todo)}")
        if msg.error():
            continue
        if msg.offset() < ends[msg.partition()]:
            entries.append(decode(msg.value(), "Notification"))
        if msg.offset() + 1 >= ends[msg.partition()]:
            todo.discard(msg.partition())
            consumer.pause([TopicPartition(topic, msg.partition())])
    return entries, [TopicPartition(topic, p, e) for p, e in ends.items() if e > 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loyalty deliveries replay")
    parser.add_argument("--endpoint", help="only entries of this webhook/destination id")
    parser.add_argument("--from-beginning", action="store_true", help="ignore what was replayed")
    parser.add_argument("--dry-run", action="store_true", help="list entries, send nothing")
    args = parser.parse_args(argv or [])
    count = replay(Settings.from_env(), args.endpoint, args.from_beginning, args.dry_run)
    print(f"{'would replay' if args.dry_run else 'replayed'} {count} deliveries")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(__import__("sys").argv[1:]))
