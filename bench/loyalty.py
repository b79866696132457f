"""Loyalty processor throughput (events/s) and latency (p50/p99) with examples/program.yaml.

Three runs of the same workload: `memory` (the engine + processor alone through the in-memory
TestDriver), `step` (the processor on the runner's own tasks and RocksDB stores, inputs decoded
and outputs encoded as the runner does, a commit every 200 records, no Kafka: its CPU per event
and a digest of every output and changelog record, so a change that must not change behaviour
is checked byte for byte; the clock is a manual one) and `kafka` (`loyalty process loyalty` in
its own process: exactly-once transactions, changelogs and RocksDB on KAFKA_BOOTSTRAP_SERVERS).
The Kafka run first measures throughput (and the processor's CPU per event) on a backlog
produced up front, then latency at a steady paced rate: time from produce to the committed
result being readable (read_committed consumer), per event.

    python -m bench loyalty
    python -m bench.loyalty --events 50000 --customers 10000 --rate 1000
    python -m bench.loyalty --no-kafka --step-events 5000    # step only: CPU and digest
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from bench._common import add_kafka_flag, cpu_seconds, drop_topics, fresh_settings, rate
from plumbing.kafka_util import committed_reader
from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.api import Record
from processors.runtime.clock import ManualClock
from processors.runtime.partitioner import partition_for
from processors.runtime.pending import PendingMetrics
from processors.runtime.store import RocksBackend
from processors.runtime.task import TIMERS_STORE, PartitionTask
from processors.runtime.testing import TestDriver
from schemas.codec import decode, default_codec, encode
from schemas.program import Program, load_program
from schemas.settings import Settings
from schemas.topics import EVENTS_LOYALTY, LOYALTY_RESULTS, schema_for, topic_name

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_700_000_000_000
CATEGORIES = ["coffee", "electronics", "books", "grocery", "toys"]
Records = list[tuple[str, dict[str, Any]]]


def event(rnd: random.Random, customer: str, at: int) -> dict[str, Any]:
    """75% purchases (some with a coupon or a redemption), 15% app opens, 10% reviews."""
    roll = rnd.random()
    value: dict[str, Any] = {
        "id": str(uuid.UUID(int=rnd.getrandbits(128))),
        "customer_id": customer,
        "type": "PURCHASE",
        "issued_at": at,
        "received_at": at,
    }
    if roll < 0.75:
        props = {"amount": rnd.randrange(1, 300), "category": rnd.choice(CATEGORIES)}
        value["properties"] = json.dumps(props)
        if roll < 0.03:
            value["coupon_code"] = "SUMMER24"
        elif roll < 0.08:
            value["redeem"] = [{"reward_id": "POINTS", "amount": 10.0}]
    elif roll < 0.9:
        value["type"] = "APP_OPEN"
    else:
        value["type"] = "REVIEW"
        value["properties"] = json.dumps({"stars": rnd.randrange(1, 6)})
    return value


def workload(events: int, customers: int, start: int = NOW, seed: int = 7) -> Records:
    rnd = random.Random(seed)
    out = []
    for n in range(events):
        customer = f"cust-{rnd.randrange(customers)}"
        out.append((customer, event(rnd, customer, start + n)))
    return out


def run_in_memory(program: Program, records: Records) -> dict[str, Any]:
    """Engine + processor cost, one in-memory commit per record, outputs schema-checked."""
    driver = TestDriver(LoyaltyProcessor(partitions=1), program, now=NOW)
    began = time.perf_counter()
    for key, value in records:
        driver.send(EVENTS_LOYALTY, key, value)
    seconds = time.perf_counter() - began
    return {
        "mode": "memory",
        "records": len(records),
        "records_per_s": rate(len(records), seconds),
        "outputs": len(driver.emitted),
    }


def run_step(program: Program, records: Records, partitions: int = 6, batch: int = 200) -> dict[str, Any]:
    """The processor on PartitionTasks over RocksDB, as the runner drives them but without
    Kafka: each input decoded from its Avro bytes, each emit encoded, due timers fired every 50
    records, a commit every `batch` (the changelog records are each store's dirty keys then).
    Returns the CPU per event (this process, RocksDB's threads included) and a digest of every
    output (topic, key, bytes) and changelog record, in order: equal digests, same behaviour."""
    codec, clock, pending = default_codec(), ManualClock(NOW), PendingMetrics()
    outputs, changelogs = hashlib.sha256(), hashlib.sha256()
    schemas = {t: schema_for(t) for t in LoyaltyProcessor.outputs}

    def emit(topic: str, key: str, value: dict[str, Any]) -> None:
        data = codec.encode(schemas[topic], value) if schemas[topic] else orjson.dumps(value)
        outputs.update(b"\0".join((topic.encode(), key.encode(), data)) + b"\1")

    def commit() -> None:
        for task in tasks.values():
            for name, store in task.stores.items():
                for key, value in store.changelog().items():
                    changelogs.update(b"\0".join((name.encode(), key, value or b"<deleted>")) + b"\1")
            task.commit({})
        pending.apply()

    processor = LoyaltyProcessor(partitions=partitions)
    inputs = [(k, codec.encode("Event", v), partition_for(k.encode(), partitions)) for k, v in records]
    with tempfile.TemporaryDirectory() as state_dir:
        tasks = {
            p: PartitionTask(
                processor,
                p,
                {n: RocksBackend(Path(state_dir) / f"{n}-{p}") for n in [*processor.stores, TIMERS_STORE]},
                emit,
                clock.now_ms,
                lambda: program,
                pending=pending,
            )
            for p in range(partitions)
        }
        threshold = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)  # as a service runs (processors/runtime/service.py)
        offsets: dict[int, int] = {}
        began = time.process_time()
        for n, (key, raw, partition) in enumerate(inputs, 1):
            clock.advance(1)
            offsets[partition] = offset = offsets.get(partition, -1) + 1
            value = codec.decode(raw, "Event")
            tasks[partition].process(Record(EVENTS_LOYALTY, partition, offset, key, value, clock.now_ms()))
            if n % 50 == 0:
                for task in tasks.values():
                    task.fire_due(clock.now_ms())
            if n % batch == 0:
                commit()
        commit()
        cpu = time.process_time() - began
        gc.set_threshold(*threshold)
        gc.unfreeze()
        for task in tasks.values():
            task.close()
    return {
        "mode": "step",
        "records": len(records),
        "cpu_us_per_record": round(cpu / len(records) * 1e6, 1),
        "digest": outputs.hexdigest()[:16] + "/" + changelogs.hexdigest()[:16],
    }


class ResultReader:
    """Counts committed results; with `timed`, records when each event's result became
    readable (decoding each result costs CPU the processor would miss while it drains a
    backlog, so the throughput phase only counts)."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = committed_reader(settings, LOYALTY_RESULTS)
        self.count = 0
        self.timed = False
        self.seen: dict[str, float] = {}

    def poll(self, seconds: float = 0.05) -> None:
        for msg in self.consumer.consume(10_000, seconds):
            if msg.error():
                continue
            self.count += 1
            if self.timed:
                self.seen.setdefault(decode(msg.value(), "Result")["event_id"], time.time())

    def wait(self, check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if proc.poll() is not None:
                raise RuntimeError(f"bench: the loyalty processor exited ({proc.returncode}) before {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"bench: {what} not reached in {timeout}s")
            self.poll()


def produce(producer: Producer, topic: str, key: str, value: dict[str, Any]) -> None:
    data = encode("Event", value)
    while True:
        try:
            producer.produce(topic, data, key.encode())
            return
        except BufferError:
            producer.poll(0.05)


def start_processor(settings: Settings, state_dir: str) -> subprocess.Popen:
    """`loyalty process loyalty` as its own OS process, as deployed: the figures are per
    process, and the bench's result reader does not share its interpreter."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "TOPIC_PREFIX": settings.topic_prefix,
        "TOPIC_PARTITIONS": str(settings.partitions),
        "LOG_LEVEL": "warning",
    }
    cmd = [sys.executable, "-m", "deploy.cli", "process", "loyalty"]
    cmd += ["--state-dir", state_dir, "--instance-id", "bench", "--metrics-port", "0"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env)


def stop_processor(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    if proc.wait(60) != 0:
        raise RuntimeError(f"bench: the loyalty processor exited with {proc.returncode}")


def run_on_kafka(
    program: Program, records: Records, paced: int, pace: float, timeout: float = 600
) -> dict[str, Any]:
    settings = fresh_settings(program)
    topic = topic_name(EVENTS_LOYALTY, settings)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 5})
    for key, value in records:  # the backlog, produced before the processor starts
        produce(producer, topic, key, value)
    producer.flush(60)
    reader = ResultReader(settings)
    with tempfile.TemporaryDirectory() as state_dir:
        proc = start_processor(settings, state_dir)
        try:
            reader.wait(lambda: reader.count >= 1, 60, "first result", proc)
            began, first, cpu = time.perf_counter(), reader.count, cpu_seconds(proc.pid)
            reader.wait(lambda: reader.count >= len(records), timeout, "backlog processed", proc)
            throughput = rate(len(records) - first, time.perf_counter() - began)
            cpu_us = (cpu_seconds(proc.pid) - cpu) / (len(records) - first) * 1e6
            latencies = paced_latency(producer, topic, reader, paced, pace, proc)
        finally:
            stop_processor(proc)
            reader.consumer.close()
    drop_topics(settings)
    latencies.sort()
    return {
        "mode": "kafka-eos",
        "partitions": settings.partitions,
        "records": len(records),
        "records_per_s": throughput,
        "cpu_us_per_record": round(cpu_us, 1),
        "paced_rate": pace,
        "latency_ms_p50": round(statistics.median(latencies), 1),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1], 1),
    }


def paced_latency(
    producer: Producer, topic: str, reader: ResultReader, count: int, pace: float, proc: subprocess.Popen
) -> list[float]:
    """Produce `count` events at `pace` per second; ms from produce to committed result."""
    rnd = random.Random(11)
    reader.timed = True
    sent: dict[str, float] = {}
    began = time.perf_counter()
    for n in range(count):
        customer = f"lat-{rnd.randrange(1000)}"
        value = event(rnd, customer, int(time.time() * 1000))
        produce(producer, topic, customer, value)
        producer.poll(0)
        sent[value["id"]] = time.time()
        delay = began + (n + 1) / pace - time.perf_counter()
        if delay > 0:
            reader.poll(min(delay, 0.01))
    producer.flush(30)
    reader.wait(lambda: all(k in reader.seen for k in sent), 120, "paced results", proc)
    return [(reader.seen[k] - t) * 1000 for k, t in sent.items()]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--paced", type=int, default=5_000, help="events in the latency phase")
    parser.add_argument("--rate", type=float, default=1_000, help="events/s in the latency phase")
    parser.add_argument("--step-events", type=int, default=10_000, help="events of the step run (0: none)")
    add_kafka_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv or [])
    program = load_program(ROOT / "examples" / "program.yaml").model_copy(update={"version": 1})
    print("campaigns:", len(program.campaigns), "events:", args.events, flush=True)
    memory = workload(min(args.events, 20_000), args.customers)
    print(json.dumps(run_in_memory(program, memory)), flush=True)
    if args.step_events:
        print(json.dumps(run_step(program, workload(args.step_events, args.customers))), flush=True)
    if args.kafka:
        start = int(time.time() * 1000)
        records = workload(args.events, args.customers, start=start)
        print(json.dumps(run_on_kafka(program, records, args.paced, args.rate)), flush=True)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
