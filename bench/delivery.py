"""Webhook delivery throughput: signed deliveries/s from Kafka to a local HTTP receiver.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python -m bench.delivery [--messages 5000]
        [--endpoints 1] [--concurrency 8]
    python -m bench.delivery --rate 600 [--seconds 20]     # paced: a trickle, as in bench/e2e.py

Pre-loads `notifications` under a fresh topic prefix, then times the delivery service from
start until the receiver has every webhook-id once (signature verified per request; the
receiver, processors/delivery/receiver.py, runs in its own process so it does not share the GIL with the
service, and costs a fraction of the service's CPU per request).

`--rate N` instead writes the notifications at N/s while the service runs (from a child
process, so its CPU is not counted): at a trickle each fetch, wake-up and poll is paid by a few
messages, which the preloaded run hides. CPU per delivery is the service's (this process's CPU
less the main thread's, which only waits; `by_thread` splits it: `delivery` is the event loop,
`rdk:broker1` librdkafka's broker threads); latency is from each notification's `created_at` to
its first arrival at the receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import threading
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import httpx

from plumbing.topic_admin import ensure_topics
from processors.delivery.loop import DeliveryService, Options
from processors.delivery.receiver import RemoteReceiver
from processors.delivery.testing import TopicReader, notification, produce
from processors.delivery.verify import signature_header
from processors.runtime.testing import wait_for
from schemas.program import Delivery, Program, Webhook
from schemas.settings import Settings
from schemas.topics import DELIVERIES, NOTIFICATIONS

SECRET = "whsec_YmVuY2htYXJrLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm"


def run(messages: int, endpoints: int, concurrency: int) -> dict[str, float]:
    os.environ["TOPIC_PREFIX"] = f"bench{uuid.uuid4().hex[:8]}."
    settings = Settings.from_env()
    ensure_topics(settings)
    receiver = RemoteReceiver([SECRET])
    hooks = [
        Webhook(id=f"e{i}", url=receiver.url(f"/e{i}"), events=["E"], secret=SECRET) for i in range(endpoints)
    ]
    program = Program(webhooks=hooks, delivery=Delivery(max_concurrency_per_endpoint=concurrency))
    notes = [notification("E", {"n": i, "points": 10}, customer=f"c{i % 997}") for i in range(messages)]
    produce(settings, NOTIFICATIONS, notes)
    total = messages * endpoints
    service = DeliveryService(settings, lambda: program, Options(group_id="bench")).start()
    started, cpu0, receiver_cpu0 = time.monotonic(), sum(os.times()[:2]), receiver.stats()["cpu_s"]
    try:
        wait_for(lambda: receiver.stats()["unique"] >= total, timeout=600, interval=0.2)
        elapsed = time.monotonic() - started
        cpu = sum(os.times()[:2]) - cpu0  # the service's threads (and this wait's polling)
        receiver_cpu = receiver.stats()["cpu_s"] - receiver_cpu0
    finally:
        service.stop()
        receiver.close()
    attempts = TopicReader(settings, DELIVERIES).until(lambda seen: len(seen) >= total, timeout=60)
    outcomes = Counter(a["outcome"] for a in attempts)
    latencies = sorted(a["latency_ms"] for a in attempts if a["outcome"] == "DELIVERED")
    return {
        "deliveries": total,
        "endpoints": endpoints,
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "deliveries_per_s": round(total / elapsed, 1),
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[int(len(latencies) * 0.99)],
        "cpu_us_per_delivery": round(cpu / total * 1e6),
        "receiver_cpu_us_per_request": round(receiver_cpu / total * 1e6),
        "not_delivered_attempts": sum(n for o, n in outcomes.items() if o != "DELIVERED"),
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }


def _paced_producer(settings: Settings, rate: float, seconds: float, out: Any) -> None:
    """Child process: write rate*seconds notifications, each at its time, stamped when sent."""
    from confluent_kafka import Producer

    from schemas.codec import encode
    from schemas.topics import schema_for, topic_name

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 1})
    topic, schema = topic_name(NOTIFICATIONS, settings), schema_for(NOTIFICATIONS)
    sent: dict[str, int] = {}
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        lag = start + i / rate - time.monotonic()
        if lag > 0:
            time.sleep(lag)
        note = notification("E", {"n": i, "points": 10}, customer=f"c{i % 997}")
        producer.produce(topic, key=note["customer_id"].encode(), value=encode(schema, note))
        producer.poll(0)
        sent[note["id"]] = note["created_at"]
    assert producer.flush(30) == 0
    out.put(sent)


def _thread_cpu() -> dict[str, tuple[str, float]]:
    """CPU seconds of each thread of this process by id, with its name (librdkafka's threads
    are `rdk:...` by /proc; Python's by threading)."""
    names = {str(t.native_id): t.name for t in threading.enumerate()}
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as comm, open(f"/proc/self/task/{tid}/stat") as stat:
                name, fields = comm.read().strip(), stat.read().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        out[tid] = (names.get(tid, name), (int(fields[11]) + int(fields[12])) / tick)
    return out


def run_paced(rate: float, seconds: float, concurrency: int) -> dict[str, float]:
    """Notifications at `rate`/s for `seconds` into a running service; CPU per delivery and the
    latency from created_at to the receiver."""
    os.environ["TOPIC_PREFIX"] = f"bench{uuid.uuid4().hex[:8]}."
    settings = Settings.from_env()
    ensure_topics(settings)
    receiver = RemoteReceiver([SECRET])
    hook = Webhook(id="e0", url=receiver.url("/e0"), events=["E"], secret=SECRET)
    program = Program(webhooks=[hook], delivery=Delivery(max_concurrency_per_endpoint=concurrency))
    service = DeliveryService(settings, lambda: program, Options(group_id="bench")).start()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_paced_producer, args=(settings, rate, seconds, out))
    try:
        wait_for(lambda: service.consumer.assignment(), timeout=60, interval=0.1)
        cpu0, main0, started = sum(os.times()[:2]), time.thread_time(), time.monotonic()
        threads0 = _thread_cpu()
        child.start()
        sent = out.get(timeout=seconds + 120)
        child.join(30)
        wait_for(lambda: receiver.stats()["unique"] >= len(sent), timeout=120, interval=0.2)
        elapsed = time.monotonic() - started
        cpu = sum(os.times()[:2]) - cpu0 - (time.thread_time() - main0)  # the service's threads
        arrivals = receiver.arrivals()
        by_thread: Counter[str] = Counter()
        for tid, (name, spent) in _thread_cpu().items():
            by_thread[name.split("_")[0]] += spent - threads0.get(tid, (name, 0.0))[1]
    finally:
        service.stop()
        receiver.close()
    lat = sorted(arrivals[i] - at for i, at in sent.items())
    return {
        "rate": rate,
        "deliveries": len(sent),
        "seconds": round(elapsed, 2),
        "p50_ms": round(lat[len(lat) // 2], 1),
        "p99_ms": round(lat[int(len(lat) * 0.99)], 1),
        "max_ms": round(lat[-1], 1),
        "cpu_us_per_delivery": round(cpu / len(sent) * 1e6),
        "by_thread": ",".join(f"{name}:{round(t / len(sent) * 1e6)}" for name, t in by_thread.most_common(4)),
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }


async def _client_run(name: str, url: str, requests: int, concurrency: int) -> dict[str, float]:
    """`requests` signed webhook POSTs through one client, `concurrency` at a time, as
    delivery sends them (same body, headers and signature)."""
    body = b'{"event":"E","data":{"points":10}}'
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    def headers(i: int) -> dict[str, str]:
        ts = int(time.time())
        wid = f"msg-{name}-{i}"
        return {
            "content-type": "application/json",
            "user-agent": "loyalty-webhooks/1",
            "webhook-id": wid,
            "webhook-timestamp": str(ts),
            "webhook-signature": signature_header([SECRET], wid, ts, body),
        }

    if name == "httpx":
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
        client: Any = httpx.AsyncClient(limits=limits, follow_redirects=False)

        async def post(i: int) -> int:
            resp = await client.post(url, content=body, headers=headers(i), timeout=10)
            return resp.status_code

        close = client.aclose
    else:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

        async def post(i: int) -> int:
            async with session.post(url, data=body, headers=headers(i), allow_redirects=False) as resp:
                await resp.read()
                return resp.status

        close = session.close

    async def worker() -> None:
        while not queue.empty():
            assert await post(queue.get_nowait()) == 200

    await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm: connections open
    for i in range(requests):
        queue.put_nowait(i + requests)
    cpu0, t0 = sum(os.times()[:2]), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - t0, sum(os.times()[:2]) - cpu0
    await close()
    return {"requests_per_s": round(requests / elapsed), "cpu_us_per_request": round(cpu / requests * 1e6)}


def compare_clients(requests: int, concurrency: int, rounds: int = 3) -> None:
    """The HTTP clients side by side in one run against the same receiver, alternating."""
    receiver = RemoteReceiver([SECRET])
    try:
        for r in range(rounds):
            for name in ("httpx", "aiohttp"):
                figures = asyncio.run(_client_run(name, receiver.url(f"/{name}"), requests, concurrency))
                print(f"client round={r + 1} {name:<8}", " ".join(f"{k}={v}" for k, v in figures.items()))
    finally:
        receiver.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.delivery")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--endpoints", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--clients", type=int, default=3000, help="requests per HTTP client in the side-by-side run (0: skip)"
    )
    parser.add_argument("--rate", type=float, default=0, help="paced: notifications/s (0: preloaded)")
    parser.add_argument("--seconds", type=float, default=20, help="paced: how long to write")
    args = parser.parse_args(argv)
    if args.rate:
        result = run_paced(args.rate, args.seconds, args.concurrency)
        print(" ".join(f"{k}={v}" for k, v in result.items()))
        return 0
    if args.clients:
        compare_clients(args.clients, args.concurrency)
    result = run(args.messages, args.endpoints, args.concurrency)
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
