"""Ingest load generator: accepted events/s (single and bulk) and latency against N ingest
worker processes on loopback, next to a raw confluent-kafka producer ceiling in the same run.

    python -m bench.ingest [--workers 2] [--seconds 10] [--rate 1000] [--bulk-size 1000] [--concurrency 8]
                           [--no-floor]

After the single events, the same load against bench/_ingest_floor.py (uvicorn with an empty
ASGI app, then with only the producer's awaited send): the floor under ingest's CPU per request.

Targets on a 2-core machine: bulk >= 50,000 events/s; single-event p99 < 20 ms at 1,000 req/s.
Uses KAFKA_BOOTSTRAP_SERVERS and a fresh TOPIC_PREFIX so it never touches other data.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
from confluent_kafka import Producer

from bench._common import cpu_by_process
from plumbing.topic_admin import ensure_topics
from schemas.codec import encode
from schemas.program import EventType, Program
from schemas.settings import Settings
from schemas.topics import (
    EVENTS_LOYALTY,
    EVENTS_TRACKING,
    LOYALTY_RESULTS,
    PROGRAM_CONFIG,
    TOPICS,
    topic_name,
)

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"
PROGRAM = Program(
    event_types=[
        EventType(
            name="PURCHASE",
            schema={"type": "object", "properties": {"amount": {"type": "number", "minimum": 0}}},
        )
    ]
)


def event(i: int) -> dict:
    return {
        "customer_id": f"cust-{i % 5000}",
        "type": "PURCHASE",
        "reference": f"order-{i}-{uuid.uuid4().hex[:6]}",
        "properties": {"amount": 10 + i % 90, "category": "books", "sku": f"sku-{i % 300}"},
        "tags": ["web"],
    }


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))] if ordered else 0.0


def raw_ceiling(settings: Settings, count: int) -> float:
    """Events/s of a bare idempotent producer (acks=all) sending pre-encoded events."""
    now = int(time.time() * 1000)
    values = []
    for i in range(2000):
        body = event(i)
        record = {
            "id": str(uuid.uuid4()),
            "kind": "EVENT",
            "customer_id": body["customer_id"],
            "type": "PURCHASE",
            "path": "loyalty",
            "reference": body["reference"],
            "brand_id": None,
            "issued_at": now,
            "received_at": now,
            "properties": orjson.dumps(body["properties"]).decode(),
            "fulfilled": True,
            "reserve": None,
            "redeem": [],
            "referral_code": None,
            "coupon_code": None,
            "tags": body["tags"],
            "metadata": "{}",
            "target_event_id": None,
            "payload": "{}",
            "reply_to": None,
        }
        values.append((body["customer_id"].encode(), encode("Event", record)))
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    topic = topic_name(EVENTS_LOYALTY, settings)
    started = time.perf_counter()
    for i in range(count):
        key, value = values[i % len(values)]
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    return count / (time.perf_counter() - started)


def start_ingest(settings: Settings, workers: int, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "TOPIC_PREFIX": settings.topic_prefix,
        "INGEST_API_KEYS": f"{KEY}:ingest",
        "INGEST_RATE_LIMIT": "0",
        "LOG_LEVEL": "warning",
    }
    cmd = [sys.executable, "-m", "deploy.cli", "ingest", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    # Wait for every worker: a worker accepts connections once it has started, and keep-alive
    # connections opened while only some workers are up would stay on those for the whole run.
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            if resp.status_code == 200:
                seen.add(resp.json()["pid"])
                if len(seen) >= workers:
                    return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"ingest did not start {workers} workers ({len(seen)} answered)")


def start_floor(settings: Settings, mode: str, port: int) -> subprocess.Popen:
    """bench/_ingest_floor.py: uvicorn serving a bare ASGI app (`empty`, or `kafka`: plus the
    producer's awaited send), the floor under a single-event request."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "TOPIC_PREFIX": settings.topic_prefix}  # fmt: skip
    cmd = [sys.executable, "-m", "bench._ingest_floor", "--port", str(port), "--mode", mode]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"http://127.0.0.1:{port}/", content=b"{}", timeout=1).status_code == 202:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"floor server ({mode}) did not start")


def floor_load(settings: Settings, args: argparse.Namespace, port: int) -> None:
    """Single events at the same rate against the floor servers: CPU per request of the
    server alone and of the server plus Kafka, next to ingest's figure above."""
    for mode, name in (("empty", "floor: uvicorn, empty app"), ("kafka", "floor: uvicorn + produce")):
        proc = start_floor(settings, mode, port)
        try:
            asyncio.run(single_load(port, 2, args.rate, args.connections))  # warm up
            cpu0, t0 = cpu_by_process(proc.pid), time.perf_counter()
            rate, lat, errors = asyncio.run(single_load(port, args.seconds, args.rate, args.connections))
            report(name, rate, lat)
            cpu_report(proc.pid, cpu0, rate * (time.perf_counter() - t0))
        finally:
            proc.terminate()
            proc.wait(30)


def request_bytes(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Minimal HTTP/1.1 response reader (keep-alive, Content-Length bodies)."""
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


class Connection:
    """One keep-alive connection; far lighter than a full HTTP client, so the load
    generator does not eat the CPU the service under test needs."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def __aenter__(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        self.writer.close()

    async def call(self, payload: bytes) -> tuple[int, bytes]:
        self.writer.write(payload)
        return await read_response(self.reader)


async def bulk_load(port: int, seconds: float, size: int, concurrency: int) -> tuple[float, list]:
    payloads = [
        request_bytes(
            "/behavior/events/bulk", orjson.dumps({"events": [event(i * size + j) for j in range(size)]})
        )
        for i in range(8)
    ]
    accepted, latencies = 0, []
    deadline = time.perf_counter() + seconds

    async def client_loop(n: int) -> None:
        nonlocal accepted
        async with Connection(port) as conn:
            i = n
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                status, body = await conn.call(payloads[i % len(payloads)])
                latencies.append(time.perf_counter() - t0)
                if status == 200:
                    accepted += orjson.loads(body)["accepted"]
                i += 1

    started = time.perf_counter()
    await asyncio.gather(*(client_loop(n) for n in range(concurrency)))
    return accepted / (time.perf_counter() - started), latencies


async def single_load(port: int, seconds: float, rate: float, connections: int) -> tuple:
    """Open loop at `rate` req/s over a pool of keep-alive connections. Latency counts from
    the scheduled start, so queueing behind a slow request is included (no coordinated
    omission)."""
    payloads = [request_bytes("/behavior/events", orjson.dumps(event(i))) for i in range(1000)]
    queue: asyncio.Queue = asyncio.Queue()
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        async with Connection(port) as conn:
            while (item := await queue.get()) is not None:
                scheduled, payload = item
                status, _ = await conn.call(payload)
                latencies.append(time.perf_counter() - scheduled)
                errors += status != 202

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    total = int(seconds * rate)
    started = time.perf_counter()
    for i in range(total):
        at = started + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((at, payloads[i % len(payloads)]))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return len(latencies) / (time.perf_counter() - started), latencies, errors


def report(name: str, rate: float, latencies: list[float]) -> None:
    ms = [x * 1000 for x in latencies]
    print(
        f"{name:<28} {rate:>10,.0f} events/s   p50 {percentile(ms, 50):7.2f} ms   "
        f"p99 {percentile(ms, 99):7.2f} ms   mean {statistics.fmean(ms) if ms else 0:7.2f} ms"
    )


def cpu_report(pid: int, before: dict[int, float], events: float) -> None:
    """Ingest CPU per event: comparable across runs even when other load shares the cores; and
    how it split over the processes (balanced workers take about equal shares)."""
    after = cpu_by_process(pid)
    spent = {p: after[p] - before.get(p, 0.0) for p in after}
    used = sum(spent.values())
    per_event = used / events * 1e6 if events else 0.0
    cores = os.cpu_count() or 1
    print(
        f"  ingest CPU {per_event:6.1f} us/event -> {cores * 1e6 / per_event if per_event else 0:,.0f}"
        f" events/s if the {cores} cores served ingest alone; load avg {os.getloadavg()[0]:.1f}"
    )
    shares = sorted((cpu / used * 100 for cpu in spent.values() if used and cpu / used >= 0.01), reverse=True)
    print("  CPU split over ingest processes: " + " / ".join(f"{share:.0f}%" for share in shares))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.ingest", description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=1000, help="single-event requests/s")
    parser.add_argument("--bulk-size", type=int, default=1000)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="parallel bulk clients, one keep-alive connection each (the kernel spreads connections,"
        " not requests, over the workers: with 4 and 2 workers, all land on one worker 1 time in 8)",
    )
    parser.add_argument("--connections", type=int, default=64, help="single-event connections")
    parser.add_argument("--raw-count", type=int, default=300_000)
    parser.add_argument(
        "--no-floor", dest="floor", action="store_false",
        help="skip the single-event floor (uvicorn with an empty app, then with the producer only)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    settings = replace(Settings.from_env(), topic_prefix=f"bench-{uuid.uuid4().hex[:6]}.")
    names = (EVENTS_LOYALTY, EVENTS_TRACKING, LOYALTY_RESULTS, PROGRAM_CONFIG)
    ensure_topics(settings, [TOPICS[n] for n in names])
    from plumbing.config_table import publish_program

    publish_program(settings, PROGRAM)
    print(
        f"kafka {settings.kafka_bootstrap_servers}, prefix {settings.topic_prefix}, "
        f"{settings.partitions} partitions, {args.workers} ingest workers, {os.cpu_count()} cores"
    )
    report("raw producer ceiling", raw_ceiling(settings, args.raw_count), [])

    port = int(os.environ.get("BENCH_PORT", "18080"))
    proc = start_ingest(settings, args.workers, port)
    try:
        cpu0, t0 = cpu_by_process(proc.pid), time.perf_counter()
        rate, lat = asyncio.run(bulk_load(port, args.seconds, args.bulk_size, args.concurrency))
        report(f"bulk ({args.bulk_size}/request)", rate, lat)
        cpu_report(proc.pid, cpu0, rate * (time.perf_counter() - t0))
        cpu0, t0 = cpu_by_process(proc.pid), time.perf_counter()
        rate, lat, errors = asyncio.run(single_load(port, args.seconds, args.rate, args.connections))
        report(f"single @ {args.rate:,.0f} req/s", rate, lat)
        cpu_report(proc.pid, cpu0, rate * (time.perf_counter() - t0))
        if errors:
            print(f"  single-event errors: {errors}")
    finally:
        proc.terminate()
        proc.wait(30)
    if args.floor:
        floor_load(settings, args, port + 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
