"""End to end: PURCHASE over HTTP to the CUSTOMER_ACCUMULATION webhook at a receiver.

    python -m bench.e2e [--rate 1000] [--seconds 60] [--connections 64] [--ingest-workers 1]

The real services (ingest, the loyalty processor, delivery), started by the local stack's own
code (`deploy.local.stack.up` with a subset of services) under a fresh TOPIC_PREFIX and a
throwaway `.local` directory, against KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL, program
examples/program.yaml. The receiver (processors/delivery/receiver.py) runs in its own process and checks
every signature. An open-loop client paces single PURCHASE requests at `--rate`; each latency
is from the HTTP 202 to the webhook's first arrival at the receiver. The stage split uses the
timestamps the pipeline already records: the event's `received_at` (ingest), the result's
`processed_at` (loyalty), the attempt's start (`deliveries.at - latency_ms`, delivery) and the
receiver's arrival time. The sustained rate is accepted events over the time from the first
request to the last webhook; the stack keeps up when that is the offered rate and the last
webhook arrives soon after the last request. CPU per event of each process is from /proc, the
figure to trust on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition

from bench._common import cpu_seconds
from bench.ingest import Connection, event, percentile
from deploy.local import stack as local_stack
from plumbing.topic_admin import delete_topics
from processors.delivery.kafka_io import partitions
from processors.delivery.receiver import RemoteReceiver
from schemas.codec import decode
from schemas.ids import name_uuid
from schemas.settings import Settings
from schemas.topics import DELIVERIES, EVENTS_LOYALTY, LOYALTY_RESULTS, schema_for, topic_name

SECRET = "whsec_ZGVtby1zZWNyZXQtZm9yLWxvY2FsLXRlc3Rpbmc="  # examples/program.yaml's webhook
SERVICES = ("loyalty", "delivery", "ingest")
API_KEY = local_stack.DEV_API_KEY
ACCUMULATION = "CUSTOMER_ACCUMULATION"
WINDOW_MS = 10_000  # the latency over time is printed per window of the run
WARMUP_MS = 20_000  # the first 10 s are every customer's first two purchases (bench.ingest.event:
# 5,000 customers), 2.5 webhooks per event (ACHIEVEMENT_PROGRESS, BADGE_AWARDED) instead of 1:
# a backlog that takes the next 10 s to drain; shown per window, left out of the steady figure


def request_bytes(body: bytes) -> bytes:
    head = (
        f"POST /behavior/events HTTP/1.1\r\nHost: bench\r\nX-API-Key: {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def paced_load(port: int, seconds: float, rate: float, connections: int) -> list[tuple]:
    """Open loop: request i is due at start + i/rate whatever the earlier answers did.
    Returns (due epoch ms, 202 epoch ms, event id) per accepted request and counts errors."""
    payloads = [request_bytes(orjson.dumps(event(i))) for i in range(int(seconds * rate))]
    queue: asyncio.Queue = asyncio.Queue()
    accepted: list[tuple[float, float, str]] = []
    errors: list[int] = []
    offset = time.time() - time.perf_counter()  # perf_counter -> epoch

    async def worker() -> None:
        async with Connection(port) as conn:
            while (item := await queue.get()) is not None:
                due, payload = item
                status, body = await conn.call(payload)
                if status == 202:
                    done = (time.perf_counter() + offset) * 1000
                    accepted.append(((due + offset) * 1000, done, orjson.loads(body)["data"]["id"]))
                else:
                    errors.append(status)

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    started = time.perf_counter()
    for i, payload in enumerate(payloads):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, payload))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    if errors:
        print(f"  {len(errors)} requests not accepted (statuses {sorted(set(errors))})")
    return accepted


def read_topic(settings: Settings, base: str, timeout: float = 120.0) -> list[dict]:
    """Every committed record of a topic, read up to its end offsets."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"bench-e2e-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    topic = topic_name(base, settings)
    parts = [TopicPartition(topic, p, 0) for p in partitions(consumer, topic)]
    ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
    consumer.assign(parts)
    schema = schema_for(base)
    records: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.5):
            if not msg.error() and msg.value() is not None:
                records.append(decode(msg.value(), schema))
        positions = consumer.position(parts)
        if all(p.offset >= ends[p.partition] for p in positions):
            break
    consumer.close()
    return records


def wait_delivered(receiver: RemoteReceiver, wanted: int, drain_s: float, idle_s: float = 30.0) -> None:
    """Poll the receiver until it has `wanted` CUSTOMER_ACCUMULATION webhooks; give up after
    `drain_s`, or `idle_s` without a new one (a stack that fell behind is reported, not awaited)."""
    last, last_change, deadline = -1, time.monotonic(), time.monotonic() + drain_s
    while (unique := receiver.stats()["by_event"].get(ACCUMULATION, 0)) < wanted:
        if unique != last:
            last, last_change = unique, time.monotonic()
        if time.monotonic() - last_change > idle_s or time.monotonic() > deadline:
            print(f"  gave up waiting: {unique:,} of {wanted:,} webhooks arrived")
            return
        time.sleep(0.5)


def line(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:<34} (none)"
    p50, p99 = percentile(values, 50), percentile(values, 99)
    return f"{name:<34} p50 {p50:8.1f}   p99 {p99:8.1f}   max {max(values):8.1f} ms"


def report(
    sent: list[tuple],
    arrivals: dict[str, float],
    events: list[dict],
    results: list[dict],
    attempts: list[dict],
) -> dict:
    received = {e["id"]: e["received_at"] for e in events}
    processed = {r["event_id"]: r["processed_at"] for r in results}
    started = {a["webhook_id"]: a["at"] - a["latency_ms"] for a in attempts if a["outcome"] == "DELIVERED"}
    e2e, http, ingest, loyalty, handoff, post = [], [], [], [], [], []
    by_window: dict[int, list[tuple[float, float | None]]] = {}  # 10 s of the run -> (e2e, handoff)
    first_due = min((due for due, _, _ in sent), default=0.0)  # answers come back out of order
    missing = 0
    for due, accepted_at, event_id in sent:
        wid = name_uuid(f"{event_id}:{ACCUMULATION}")
        arrived = arrivals.get(wid)
        http.append(accepted_at - due)
        if arrived is None:
            missing += 1
            continue
        e2e.append(arrived - accepted_at)
        window = by_window.setdefault(int((due - first_due) // WINDOW_MS), [])
        if event_id in processed and wid in started:
            loyalty.append(processed[event_id] - accepted_at)
            handoff.append(started[wid] - processed[event_id])
            post.append(arrived - started[wid])
        window.append((e2e[-1], handoff[-1] if event_id in processed and wid in started else None))
        if event_id in received:
            ingest.append(accepted_at - received[event_id])
    print(line("request due -> HTTP 202 (client)", http))
    print(line("HTTP 202 -> webhook at receiver", e2e))
    print("  stage split:")
    if ingest:
        print(line("    ingest received -> 202", ingest))
    print(line("    202 -> processed (loyalty)", loyalty))
    print(line("    processed -> attempt (delivery)", handoff))
    print(line("    attempt -> at receiver (HTTP)", post))
    print(f"  by {WINDOW_MS // 1000} s of the run (by request): 202 -> webhook p50 / p99, delivery p99")
    for index, pairs in sorted(by_window.items()):
        waits, handoffs = [w for w, _ in pairs], [h for _, h in pairs if h is not None]
        start, p50, p99 = index * WINDOW_MS / 1000, percentile(waits, 50), percentile(waits, 99)
        print(f"    {start:5.0f} s  {p50:8.1f} / {p99:8.1f} ms   {percentile(handoffs, 99):8.1f} ms")
    steady = [w for index, pairs in by_window.items() if index * WINDOW_MS >= WARMUP_MS for w, _ in pairs]
    print(line(f"  after the first {WARMUP_MS // 1000} s (steady)", steady))
    if missing:
        print(f"  {missing} accepted events without a webhook at the receiver")
    return {"p50": percentile(e2e, 50), "p99": percentile(e2e, 99), "max": max(e2e, default=0.0)}


def local_broker_pid(bootstrap: str) -> int | None:
    """The pid of a broker on this machine listening on `bootstrap` (a `kafka.Kafka` java
    process whose server.properties names that port), or None: its CPU is a share of the
    machine the stack uses, reported beside the services'."""
    port = bootstrap.split(",")[0].rsplit(":", 1)[-1]
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            listens = f"PLAINTEXT://127.0.0.1:{port}"
            if b"kafka.Kafka" in args and listens in Path(args[-2].decode()).read_text():
                return int(proc.name)
        except (OSError, IndexError, UnicodeDecodeError):
            continue
    return None


def run(rate: float, seconds: float, connections: int, ingest_workers: int, drain_s: float) -> int:
    home = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    prefix = f"e2e-{uuid.uuid4().hex[:8]}."
    settings = Settings(
        kafka_bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"],
        topic_prefix=prefix,
        partitions=int(os.environ.get("TOPIC_PARTITIONS", "6")),
    )
    with ExitStack() as cleanup:
        receiver = RemoteReceiver([SECRET])
        cleanup.callback(receiver.close)
        env = {
            "TOPIC_PREFIX": prefix,
            "LOYALTY_PORTS": "auto",
            "LOYALTY_RECEIVER_PORT": str(receiver.port),
            "INGEST_RATE_LIMIT": "0",
            "INGEST_WORKERS": str(ingest_workers),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "warning"),
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            stack = local_stack.Stack(home=home, only=SERVICES)
            cleanup.callback(shutil.rmtree, home, ignore_errors=True)
            cleanup.callback(delete_topics, settings.kafka_bootstrap_servers, prefix)
            cleanup.callback(local_stack.down, stack)
            state = local_stack.up(stack)
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        pids = {name: state["services"][name]["pid"] for name in SERVICES}
        pids["receiver"] = receiver.proc.pid
        broker = local_broker_pid(settings.kafka_bootstrap_servers)
        port = state["ports"]["ingest"]
        print(
            f"prefix {prefix}, {settings.partitions} partitions, {ingest_workers} ingest worker(s), "
            f"{rate:,.0f} events/s for {seconds:.0f}s over {connections} connections, "
            f"{os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}"
        )
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        cpu0["load generator"] = sum(os.times()[:2])
        cpu0["broker"] = cpu_seconds(broker) if broker else 0.0
        began = time.time() * 1000
        sent = asyncio.run(paced_load(port, seconds, rate, connections))
        load_done = time.time() * 1000
        wait_delivered(receiver, len(sent), drain_s)
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        cpu["load generator"] = sum(os.times()[:2]) - cpu0["load generator"]
        broker_cpu = cpu_seconds(broker) - cpu0["broker"] if broker else None
        arrivals = receiver.arrivals()
        kinds = receiver.stats()["by_event"]
        print(
            f"webhooks at the receiver: {sum(kinds.values()):,} "
            f"({', '.join(f'{k} {v:,}' for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))})"
        )
        mine = [arrivals[w] for w in (name_uuid(f"{e}:{ACCUMULATION}") for *_, e in sent) if w in arrivals]
        figures = report(
            sent,
            arrivals,
            read_topic(settings, EVENTS_LOYALTY),
            read_topic(settings, LOYALTY_RESULTS),
            read_topic(settings, DELIVERIES),
        )
        last = max(mine, default=load_done)
        sustained = len(mine) / ((last - began) / 1000) if mine else 0.0
        print(
            f"accepted {len(sent):,} of {int(rate * seconds):,}; webhooks {len(mine):,}; "
            f"sustained {sustained:,.0f} events/s (first request -> last webhook); last webhook "
            f"{(last - load_done) / 1000:.1f}s after the last request"
        )
        print(
            f"e2e p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms, max {figures['max']:.1f} ms "
            "(goal p99 < 250 ms); load avg now "
            f"{os.getloadavg()[0]:.1f}"
        )
        events = max(len(sent), 1)
        print(
            "CPU per event: "
            + ", ".join(f"{name} {seconds_ * 1e6 / events:,.0f} us" for name, seconds_ in cpu.items())
            + f" (total {sum(cpu.values()) * 1e6 / events:,.0f} us); broker "
            + (f"{broker_cpu * 1e6 / events:,.0f} us" if broker_cpu is not None else "not on this machine")
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.e2e", description=__doc__)
    parser.add_argument("--rate", type=float, default=1000, help="PURCHASE requests per second")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=64, help="keep-alive client connections")
    parser.add_argument("--ingest-workers", type=int, default=1)
    parser.add_argument(
        "--drain", type=float, default=120, help="seconds to wait after the load for the last webhooks"
    )
    args = parser.parse_args(argv)
    # a SIGTERM (timeout, Ctrl-C from a supervisor) still stops the services and drops the topics
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args.rate, args.seconds, args.connections, args.ingest_workers, args.drain)


if __name__ == "__main__":
    raise SystemExit(main())
