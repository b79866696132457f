"""Journeys processor throughput: events/s with 10 active journeys, then timers fired/s.

Two runs of the same workload: `memory` (the processor alone through the in-memory TestDriver,
one commit per record) and `kafka` (the real Runner on KAFKA_BOOTSTRAP_SERVERS: transactions,
changelogs, RocksDB; skipped when that variable is unset). The clock is a ManualClock moved
past every wait at once, so the timer phase measures firing, not waiting.

    python -m bench journeys            # defaults
    python -m bench.journeys --events 50000 --customers 5000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from prometheus_client import REGISTRY

from bench._common import add_kafka_flag, drop_topics, fresh_settings, rate
from processors.journeys.processor import build
from processors.runtime.api import Processor
from processors.runtime.clock import ManualClock
from processors.runtime.testing import TestDriver
from schemas.codec import encode
from schemas.program import Journey, Program
from schemas.topics import EVENTS_LOYALTY, EVENTS_TRACKING, schema_for, topic_name

NOW = 1_700_000_000_000
MINUTE = 60_000
ENTRY_TYPES = [
    "ADD_TO_CART",
    "VIEW_ITEM",
    "SIGNUP",
    "APP_OPEN",
    "REVIEW",
    "WISHLIST",
    "SEARCH",
    "SHARE",
    "LOGIN",
    "CHECKOUT_START",
]
Records = list[tuple[str, str, dict[str, Any]]]


def journeys() -> list[Journey]:
    """10 journeys: entry event -> 30 min wait (with a condition) -> email; PURCHASE exits."""
    out = []
    for i, entry in enumerate(ENTRY_TYPES):
        next_type = ENTRY_TYPES[(i + 1) % len(ENTRY_TYPES)]
        spec = {
            "id": f"journey_{i}",
            "entry_event": entry,
            "exit_events": ["PURCHASE"],
            "nodes": [
                {"id": "start", "kind": "start"},
                {"id": "wait", "kind": "wait"},
                {"id": "email", "kind": "action", "action": "email", "template": f"t{i}"},
                {"id": "push", "kind": "action", "action": "push", "template": f"p{i}"},
                {"id": "end", "kind": "end"},
            ],
            "edges": [
                {"from": "start", "to": "wait", "condition": "properties.value >= 0"},
                {"from": "wait", "to": "push", "event_type": next_type,
                 "condition": "event.properties.value > 50"},
                {"from": "wait", "to": "email", "wait_minutes": 30,
                 "condition": "event.properties.value < 90"},
                {"from": "email", "to": "end"},
                {"from": "push", "to": "end"},
            ],
        }  # fmt: skip
        out.append(Journey.model_validate(spec))
    return out


def workload(events: int, customers: int, seed: int = 7) -> Records:
    """80% journey events, 10% PURCHASE (exits), 10% PAGE_VIEW (matters to no journey)."""
    rnd = random.Random(seed)
    records = []
    for n in range(events):
        customer = f"cust-{rnd.randrange(customers)}"
        roll = rnd.random()
        etype = "PURCHASE" if roll < 0.1 else "PAGE_VIEW" if roll < 0.2 else rnd.choice(ENTRY_TYPES)
        topic = EVENTS_LOYALTY if etype == "PURCHASE" else EVENTS_TRACKING
        value = {
            "id": str(uuid.UUID(int=rnd.getrandbits(128))),
            "customer_id": customer,
            "type": etype,
            "path": "loyalty" if topic == EVENTS_LOYALTY else "tracking",
            "issued_at": NOW + n,
            "received_at": NOW + n,
            "properties": json.dumps({"value": rnd.randrange(100)}),
        }
        records.append((topic, customer, value))
    return records


def run_in_memory(
    processor: Processor, program: Program, records: Records, advance_ms: int
) -> dict[str, Any]:
    """Processor-only cost (one in-memory commit per record, outputs schema-checked)."""
    driver = TestDriver(processor, program, now=NOW)
    began = time.perf_counter()
    for topic, key, value in records:
        driver.send(topic, key, value)
    processing = time.perf_counter() - began
    outputs = len(driver.emitted)
    task = driver.tasks[0]
    timers = task.due_count(NOW + advance_ms)
    began = time.perf_counter()
    driver.advance(advance_ms)
    while task.due_count(driver.clock.now_ms()):  # 1000 per punctuation
        driver.advance(0)
    firing = time.perf_counter() - began
    return {
        "mode": "memory",
        "records": len(records),
        "records_per_s": rate(len(records), processing),
        "outputs": outputs,
        "timers": timers,
        "timers_per_s": rate(timers, firing),
        "timer_outputs": len(driver.emitted) - outputs,
    }


def _metric(name: str, processor: str) -> float:
    total = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels.get("processor") == processor:
                total += sample.value
    return total


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: {what} not reached in {timeout}s")
        time.sleep(0.01)


def run_on_kafka(
    processor: Processor,
    program: Program,
    records: Records,
    advance_ms: int,
    timeout: float = 300,
) -> dict[str, Any]:
    """The real Runner (transactions, changelogs, RocksDB) on a fresh topic prefix."""
    from processors.runtime.runner import Runner, RuntimeOptions

    settings = fresh_settings(program)
    clock = ManualClock(NOW)
    with tempfile.TemporaryDirectory() as state_dir:
        options = RuntimeOptions(state_dir=Path(state_dir), instance_id="bench", clock=clock)
        runner = Runner(processor, settings, options).start()
        try:
            _wait(runner.ready.is_set, 60, "partition assignment")
            seen_in = _metric("stream_records_in_total", processor.name)
            seen_timers = _metric("stream_timers_fired_total", processor.name)
            producer = Producer(
                {
                    "bootstrap.servers": settings.kafka_bootstrap_servers,
                    "linger.ms": 20,
                    "partitioner": "murmur2_random",
                }
            )
            began = time.perf_counter()
            for topic, key, value in records:
                data = encode(schema_for(topic) or "", value)
                while True:
                    try:
                        producer.produce(topic_name(topic, settings), data, key.encode())
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.flush(60)
            target = seen_in + len(records)
            _wait(lambda: _metric("stream_records_in_total", processor.name) >= target,
                  timeout, "all records processed")  # fmt: skip
            processing = time.perf_counter() - began
            _wait(lambda: not runner.in_txn, 30, "last commit")
            due = _timers_pending(runner)
            began = time.perf_counter()
            clock.advance(advance_ms)
            _wait(lambda: _metric("stream_timers_fired_total", processor.name) - seen_timers
                  >= due, timeout, "all timers fired")  # fmt: skip
            firing = time.perf_counter() - began
            assert runner.error is None, runner.error
        finally:
            runner.stop()
    drop_topics(settings)
    return {
        "mode": "kafka",
        "partitions": settings.partitions,
        "records": len(records),
        "records_per_s": rate(len(records), processing),
        "timers": due,
        "timers_per_s": rate(due, firing),
    }


def _timers_pending(runner: Any) -> int:
    return sum(1 for task in list(runner.tasks.values()) for k, _ in task.timers.range("t/", "t0"))


def parse(argv: list[str], events: int, customers: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=events)
    parser.add_argument("--customers", type=int, default=customers)
    add_kafka_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv, events=20_000, customers=2_000)
    program = Program(version=1, journeys=journeys())
    records = workload(args.events, args.customers)
    print("journeys:", len(program.journeys), "events:", len(records), flush=True)
    print(json.dumps(run_in_memory(build(), program, records, 31 * MINUTE)), flush=True)
    if args.kafka:
        print(json.dumps(run_on_kafka(build(), program, records, 31 * MINUTE)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
