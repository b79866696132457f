"""Webhook delivery throughput: signed deliveries/s from Kafka to a local HTTP receiver.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python -m bench.delivery [--messages 5000]
        [--endpoints 1] [--concurrency 8]

Pre-loads `notifications` under a fresh topic prefix, then times the delivery service from
start until the receiver has every webhook-id once (signature verified per request; the
receiver runs in its own process so it does not share the GIL with the service).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections import Counter

import httpx

from bench._child import read_line
from deploy.topics import ensure_topics
from processors.delivery.service import DeliveryService, Options
from processors.delivery.testing import TopicReader, notification, produce
from processors.runtime.testing import wait_for
from schemas.program import Delivery, Program, Webhook
from schemas.settings import Settings
from schemas.topics import DELIVERIES, NOTIFICATIONS

SECRET = "whsec_YmVuY2htYXJrLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm"


class _RemoteReceiver:
    """The receiver in its own process, so it does not share the GIL with the service."""

    def __init__(self, secret: str) -> None:
        cmd = [sys.executable, "-m", "processors.delivery.receiver", "--secret", secret]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.port = int(read_line(self.proc, 60, "the webhook receiver"))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def unique(self) -> int:
        stats = httpx.get(f"http://127.0.0.1:{self.port}/", timeout=5).json()
        return sum(s["unique"] for s in stats.values())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


def run(messages: int, endpoints: int, concurrency: int) -> dict[str, float]:
    os.environ["TOPIC_PREFIX"] = f"bench{uuid.uuid4().hex[:8]}."
    settings = Settings.from_env()
    ensure_topics(settings)
    receiver = _RemoteReceiver(SECRET)
    hooks = [
        Webhook(id=f"e{i}", url=receiver.url(f"/e{i}"), events=["E"], secret=SECRET) for i in range(endpoints)
    ]
    program = Program(webhooks=hooks, delivery=Delivery(max_concurrency_per_endpoint=concurrency))
    notes = [notification("E", {"n": i, "points": 10}, customer=f"c{i % 997}") for i in range(messages)]
    produce(settings, NOTIFICATIONS, notes)
    total = messages * endpoints
    service = DeliveryService(settings, lambda: program, Options(group_id="bench")).start()
    started = time.monotonic()
    try:
        wait_for(lambda: receiver.unique() >= total, timeout=600)
        elapsed = time.monotonic() - started
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
        "not_delivered_attempts": sum(n for o, n in outcomes.items() if o != "DELIVERED"),
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.delivery")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--endpoints", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    result = run(args.messages, args.endpoints, args.concurrency)
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
