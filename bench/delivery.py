"""Webhook delivery throughput: signed deliveries/s from Kafka to a local HTTP receiver.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python -m bench.delivery [--messages 5000]
        [--endpoints 1] [--concurrency 8]

Pre-loads `notifications` under a fresh topic prefix, then times the delivery service from
start until the receiver has every webhook-id once (signature verified per request; the
receiver, processors/delivery/receiver.py, runs in its own process so it does not share the GIL with the
service, and costs a fraction of the service's CPU per request).
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
    args = parser.parse_args(argv)
    if args.clients:
        compare_clients(args.clients, args.concurrency)
    result = run(args.messages, args.endpoints, args.concurrency)
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
