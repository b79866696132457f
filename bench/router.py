"""Router throughput: JSON bodies on events.inbound -> checked, routed Avro records on
events.loyalty / events.tracking (and REJECTED results), exactly once, `loyalty process router`
in its own process. The same bodies as the HTTP ingest benchmark measures (POST
/behavior/events), to compare the two ways in.

A backlog is produced before the router starts; events/s = outputs / time from the first output
to the last (start-up does not count); CPU per event of the router process from /proc.

    python -m bench router
    python -m bench.router --events 50000
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from bench._common import cpu_seconds, drop_topics, fresh_settings, rate
from schemas.program import EventType, Program
from schemas.settings import Settings
from schemas.topics import EVENTS_INBOUND, EVENTS_LOYALTY, EVENTS_TRACKING, LOYALTY_RESULTS, topic_name

ROOT = Path(__file__).resolve().parents[1]
AMOUNT = {"type": "object", "properties": {"amount": {"type": "number", "minimum": 0}}}
PROGRAM = Program(
    event_types=[EventType(name="PURCHASE", schema=AMOUNT), EventType(name="PAGE_VIEW", path="tracking")]
)
OUTPUTS = (EVENTS_LOYALTY, EVENTS_TRACKING, LOYALTY_RESULTS)


def body(rnd: random.Random, i: int) -> dict[str, Any]:
    """80% purchases, 15% page views (tracking), 5% invalid (a negative amount)."""
    customer = f"c{rnd.randrange(5000)}"
    roll = rnd.random()
    if roll < 0.80:
        props = {"amount": rnd.randrange(1, 300), "category": "books"}
        return {"customer_id": customer, "type": "PURCHASE", "reference": f"o{i}", "properties": props}
    if roll < 0.95:
        props = {"page": "/"}
        return {"customer_id": customer, "type": "PAGE_VIEW", "reference": f"v{i}", "properties": props}
    return {"customer_id": customer, "type": "PURCHASE", "reference": f"x{i}", "properties": {"amount": -1}}


def produce_backlog(settings: Settings, count: int) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 20,
                         "partitioner": "murmur2_random"})  # fmt: skip
    topic, rnd = topic_name(EVENTS_INBOUND, settings), random.Random(7)
    for i in range(count):
        value = body(rnd, i)
        while True:
            try:
                producer.produce(topic, orjson.dumps(value), value["customer_id"].encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


def reader(settings: Settings) -> Consumer:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": uuid.uuid4().hex,
                         "isolation.level": "read_committed", "enable.auto.commit": False})  # fmt: skip
    consumer.assign([TopicPartition(topic_name(t, settings), p, 0) for t in OUTPUTS
                     for p in range(settings.partitions)])  # fmt: skip
    return consumer


def start_router(settings: Settings, state_dir: str) -> subprocess.Popen:
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers, "TOPIC_PREFIX": settings.topic_prefix,
           "TOPIC_PARTITIONS": str(settings.partitions), "LOG_LEVEL": "warning"}  # fmt: skip
    cmd = [sys.executable, "-m", "deploy.cli", "process", "router", "--state-dir", state_dir,
           "--instance-id", "bench", "--metrics-port", "0"]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env})


def measure(count: int, timeout: float = 600) -> dict[str, Any]:
    settings = fresh_settings(PROGRAM)
    produce_backlog(settings, count)
    consumer, seen, counted, first_at, cpu_at_first = reader(settings), 0, 0, 0.0, 0.0
    with tempfile.TemporaryDirectory() as state_dir:
        proc = start_router(settings, state_dir)
        try:
            deadline = time.monotonic() + timeout
            while seen < count and time.monotonic() < deadline and proc.poll() is None:
                got = sum(1 for m in consumer.consume(1000, 0.1) if not m.error())
                seen += got
                if got and not first_at:  # the clock starts at the first output batch
                    first_at, cpu_at_first = time.perf_counter(), cpu_seconds(proc.pid)
                elif first_at:
                    counted += got
            elapsed, cpu = time.perf_counter() - first_at, cpu_seconds(proc.pid) - cpu_at_first
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            consumer.close()
    drop_topics(settings)
    if seen < count:
        raise RuntimeError(f"bench.router: {seen} of {count} outputs within {timeout:g} s")
    cpu_us = round(cpu / max(counted, 1) * 1e6, 1)
    return {"mode": "router-eos", "partitions": settings.partitions, "records": count,
            "records_per_s": rate(counted, elapsed), "cpu_us_per_record": cpu_us}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.router")
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args(argv or [])
    print(orjson.dumps(measure(args.events)).decode(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
