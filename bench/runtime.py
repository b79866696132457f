"""Runtime benchmark: a stateful count/sum per key over 200k events, side by side with
(a) a bare confluent-kafka consume->produce loop (no state, no EOS: the ceiling for Python) and
(b) faust-streaming 0.15 doing the same stateful work with a table.

Each system runs as its own process against the same real broker in the same run.
Throughput: 200k records preloaded; events/s = outputs / (last - first output's produce
timestamp), so process start-up and reader lag do not count.
Latency: then 5,000 more at 1,000/s; p50/p99 of (when a read_committed reader polling every few
ms sees the output - the input's produce time). `python -m bench runtime [--events N] [--only
runtime]` (`--events` defaults to BENCH_EVENTS, else 200,000). A comparison whose package is
missing (faust-streaming comes with `.[bench]`) is reported and skipped; a child that exits
ends the benchmark with its exit code and log.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer

from bench._child import check, missing, stop
from plumbing.topic_admin import ensure_topics
from processors.runtime.example import TOPICS
from schemas.settings import Settings
from schemas.topics import TopicSpec

ROOT = Path(__file__).resolve().parent.parent
KEYS = 1000
# system, output topic, the module it needs beyond the project's own dependencies
SYSTEMS = (("bare", "bare.output", None), ("runtime", "counter.output", None),
           ("faust", "faust.output", "faust"))  # fmt: skip


@contextlib.contextmanager
def broker() -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    from deploy.local.kafka import test_broker

    with test_broker() as bootstrap:
        yield bootstrap


def produce(settings: Settings, count: int, rate: int | None = None) -> None:
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "linger.ms": 20,
            "partitioner": "murmur2_random",
        }
    )
    topic = f"{settings.topic_prefix}counter.input"
    started = time.monotonic()
    for i in range(count):
        body = orjson.dumps({"amount": 2, "ts": time.time()})
        while True:
            try:
                producer.produce(topic, body, f"k{i % KEYS}".encode())
                break
            except BufferError:
                producer.poll(0.05)
        if rate and i % 50 == 0:
            producer.poll(0)
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush(60)


class Reader:
    """Counts outputs on one topic (read_committed) and their end-to-end latencies."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": uuid.uuid4().hex,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            }
        )
        self.consumer.subscribe([f"{settings.topic_prefix}{topic}"])
        self.count = 0
        self.first = self.last = 0.0
        self.latencies: list[float] = []

    def read_until(
        self,
        total: int,
        timeout: float,
        record_latency: bool = False,
        proc: subprocess.Popen | None = None,
        log: Path | None = None,
    ) -> bool:
        """False after `timeout`; ChildFailed as soon as `proc` (the system measured, logging
        to `log`) exits."""
        deadline = time.monotonic() + timeout
        while self.count < total and time.monotonic() < deadline:
            if proc is not None:
                check(proc, log.stem if log else "child", log)
            for msg in self.consumer.consume(1000, 0.005 if record_latency else 0.2):
                if msg.error():
                    continue
                now = time.time()
                stamp = msg.timestamp()[1] / 1000
                self.first = min(self.first or stamp, stamp)
                self.last = max(self.last, stamp)
                self.count += 1
                if record_latency:
                    self.latencies.append(now - orjson.loads(msg.value())["ts"])
        return self.count >= total


def start(name: str, settings: Settings, state: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "TOPIC_PREFIX": settings.topic_prefix,
        "BENCH_PREFIX": settings.topic_prefix,
        "LOG_LEVEL": "WARNING",
        # the children run in their state dir: the project importable without an install
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    cmd = {
        "runtime": [
            sys.executable,
            "-m",
            "processors.runtime.example",
            "--state-dir",
            str(state),
            "--instance-id",
            "bench",
            "--metrics-port",
            "0",
        ],
        "bare": [sys.executable, str(ROOT / "bench" / "_bare_loop.py")],
        "faust": [sys.executable, str(ROOT / "bench" / "_faust_counter.py"), "worker", "-l", "error"],
    }[name]
    return subprocess.Popen(
        cmd, env=env, cwd=state, stdout=subprocess.DEVNULL, stderr=open(state / f"{name}.log", "w")
    )


def measure(name: str, output: str, settings: Settings, total: int, state: Path) -> dict:
    reader = Reader(settings, output)
    proc, log = start(name, settings, state), state / f"{name}.log"
    try:
        done = reader.read_until(total, timeout=600, proc=proc, log=log)
        eps = total / max(reader.last - reader.first, 1e-9) if done else reader.count / 600
        paced = threading.Thread(target=produce, args=(settings, 5_000, 1_000), daemon=True)
        paced.start()
        reader.read_until(total + 5_000, timeout=120, record_latency=True, proc=proc, log=log)
        paced.join(120)
    finally:
        stop(proc)
        reader.consumer.close()
    lat = sorted(reader.latencies) or [float("nan")]
    return {
        "system": name,
        "events_s": eps,
        "complete": done,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    about = "the stream runtime against a bare loop and faust"
    parser = argparse.ArgumentParser(prog="python -m bench.runtime", description=about)
    parser.add_argument("--events", type=int, default=int(os.environ.get("BENCH_EVENTS", "200000")),
                        help="records preloaded for the throughput run (default BENCH_EVENTS or 200000)")
    parser.add_argument("--only", action="append", choices=[name for name, _, _ in SYSTEMS],
                        help="run only this system (repeatable); the ratios need runtime and bare")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    total = args.events
    with broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        results = []
        for name, output, needs in SYSTEMS:
            if args.only and name not in args.only:
                continue
            if needs and (why := missing(needs)):
                print(f"{name:8s} skipped: {why}", flush=True)
                continue
            settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:6]}.")
            ensure_topics(settings)
            ensure_topics(
                settings, [*TOPICS, TopicSpec("bare.output", None), TopicSpec("faust.output", None)]
            )
            produce(settings, total)
            state = Path(tmp) / name
            state.mkdir()
            results.append(measure(name, output, settings, total, state))
            r = results[-1]
            print(
                f"{name:8s} {r['events_s']:10,.0f} events/s  p50 {r['p50_ms']:7.1f} ms  "
                f"p99 {r['p99_ms']:7.1f} ms  complete={r['complete']}",
                flush=True,
            )
    by = {r["system"]: r for r in results}
    if "runtime" not in by:
        return 0
    if "bare" in by:
        ratio = by["runtime"]["events_s"] / by["bare"]["events_s"]
        print(f"runtime / bare loop = {ratio:.2f} (goal >= 0.50)")
    if "faust" in by:
        faust_eps = by["faust"]["events_s"] or float("nan")
        print(f"runtime / faust     = {by['runtime']['events_s'] / faust_eps:.2f} (goal >= 5)")
    else:
        print("runtime / faust     = not measured (faust skipped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
