"""Growth benchmark (issue 19): does the cost of one event stay flat as a customer's history
grows, and does the state per customer stop growing once the retention window has passed?

The real loyalty processor and examples/program.yaml (points expire after a year, so every line
stays open) run in the TestDriver: the same task, store and timer code as the Kafka runner,
its stores on RocksDB as the runner's (in a temporary directory; the TestDriver's in-memory
backend sorts every key at each range scan, which the ledger's scans would pay), and the same
bytes (each output is Avro-encoded as the runner produces it; each changelog record is a dirty
store key and its JSON value as the runner writes it at commit). One commit per
event, as with paced traffic (a backlog batches a customer's updates into one transaction and
writes fewer changelog records). Bytes are key + value, without Kafka's record overhead.

1. One customer, purchases a minute apart, after 200 purchases of another customer that warm
   the process up (CEL compiles, caches, RocksDB): at each history size (the Nth purchase),
   bytes of that event on each output topic and changelog, the customer's state bytes (and its
   record's in `customers`), the CUSTOMER_ACCUMULATION webhook body and events/s (mean of the
   last 50 events up to N) by the wall clock, and per CPU second of this process (RocksDB's
   threads included) from the median event of those 50, which a loaded machine and a
   compaction or GC pause move less. The customer's state is reported, not judged: within the
   windows it holds the customer's events and open lines by design (part 2 judges state).
2. A population of `--customers` customers over `--days` days (default two years), a purchase
   every few days each, the injectable clock moved a day at a time (expiry, tier and retention
   timers fire as they come due): state bytes per customer every 30 days.

Goals: each per-event figure within 20% from 10 to the largest history; state per customer
within 20% from the end of the longer of the retention and points-expiry windows on.

    python -m bench growth
    python -m bench.growth --sizes 1,10,100 --customers 20 --days 200     # a quick run
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from processors.delivery.routing import request_body
from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.store import RocksBackend
from processors.runtime.task import PartitionTask
from processors.runtime.testing import Emitted, TestDriver
from schemas.codec import encode
from schemas.program import Program, load_program
from schemas.topics import EVENTS_LOYALTY, schema_for

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_700_000_000_000
DAY = 86_400_000
FLAT = 1.20  # "flat": the largest figure within 20% of the smallest
WINDOW = 50  # events/s: the mean over this many events up to each history size (not the first)
WARMUP = 200  # purchases of another customer first: the process's warm-up is not history
INFORMATIVE = {"state"}  # one customer's state holds its history by design: reported, not judged


class MeteredDriver(TestDriver):
    """A TestDriver on RocksDB stores that counts, per commit, the changelog bytes each store
    would write."""

    __test__ = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="growth-")
        super().__init__(*args, **kwargs)
        self.changelog: dict[str, int] = {}

    def _task(self, partition: int) -> PartitionTask:
        task = super()._task(partition)
        for name, store in task.stores.items():
            store.backend = RocksBackend(Path(self.dir.name) / f"{partition}-{name}")
        return task

    def _commit(self) -> list[Emitted]:
        self.changelog = {}
        for task in self.tasks.values():
            for name, store in task.stores.items():
                size = sum(len(k) + len(v or b"") for k, v in store.changelog().items())
                self.changelog[name] = self.changelog.get(name, 0) + size
        return super()._commit()

    def record_bytes(self, customer_id: str) -> int:
        """Key + value bytes of the customer's record in the `customers` store."""
        store = self.tasks[self.partition_for(customer_id)].stores["customers"]
        raw = store.backend.get(customer_id.encode())
        return len(customer_id.encode()) + len(raw or b"")

    def state_bytes(self) -> int:
        """Key + value bytes of every store (what RocksDB holds before its own overhead)."""
        return sum(len(k) + len(v) for task in self.tasks.values() for store in task.stores.values()
                   for k, v in store.backend.items(b"\x01", None))  # fmt: skip


def purchase(driver: TestDriver, customer: str, rnd: random.Random) -> list[Emitted]:
    now = driver.clock.now_ms()
    props = orjson.dumps({"amount": rnd.randrange(5, 300), "category": "coffee"}).decode()
    return driver.send(EVENTS_LOYALTY, customer, {
        "id": str(uuid.UUID(int=rnd.getrandbits(128))), "customer_id": customer, "type": "PURCHASE",
        "issued_at": now, "received_at": now, "properties": props})  # fmt: skip


def topic_bytes(out: list[Emitted]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for topic, key, value in out:
        schema = schema_for(topic)
        data = encode(schema, value) if schema else orjson.dumps(value)
        sizes[topic] = sizes.get(topic, 0) + len(key.encode()) + len(data)
    return sizes


def webhook_bytes(out: list[Emitted]) -> int:
    notes = [v for t, _, v in out if t == "notifications" and v["event"] == "CUSTOMER_ACCUMULATION"]
    return len(request_body(notes[0])) if notes else 0


def one_customer(program: Program, sizes: list[int]) -> list[dict[str, Any]]:
    """Figures of the Nth purchase of one customer, for each N in `sizes`, after WARMUP purchases
    of another customer (CEL compiles, caches and RocksDB warm up over the first few hundred
    events, which would otherwise count against the short histories)."""
    driver, rnd, rows = MeteredDriver(LoyaltyProcessor(partitions=1), program, now=NOW), random.Random(7), []
    for _ in range(WARMUP):
        driver.advance(60_000)
        purchase(driver, "warm-up", rnd)
    baseline = driver.state_bytes()
    took: list[float] = []
    cpu: list[float] = []
    for n in range(1, max(sizes) + 1):
        driver.advance(60_000)
        began, began_cpu = time.perf_counter(), time.process_time()
        out = purchase(driver, "one", rnd)
        took.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
        if n in sizes:
            window = min(WINDOW, n)
            last, last_cpu = took[-window:], cpu[-window:]
            changelogs = {f"changelog {s}": b for s, b in driver.changelog.items()}
            state = driver.state_bytes() - baseline
            rows.append({"events": n, **topic_bytes(out), **changelogs, "state": state,
                         "customer record": driver.record_bytes("one"),
                         "webhook body": webhook_bytes(out),
                         "events/s": round(len(last) / sum(last), 1),
                         "events/CPU s": round(1 / max(statistics.median(last_cpu), 1e-9), 1)})  # fmt: skip
            print(f"  {n:6,} events: {rows[-1]}", flush=True)
    return rows


def population(program: Program, customers: int, days: int, every: float) -> list[tuple[int, float]]:
    """(day, state bytes per customer) every 30 days; each customer buys on a given day with
    probability 1/`every`."""
    driver, rnd = MeteredDriver(LoyaltyProcessor(partitions=1), program, now=NOW), random.Random(11)
    samples = []
    began, events = time.perf_counter(), 0
    for day in range(1, days + 1):
        driver.advance(DAY)
        for c in range(customers):
            if rnd.random() < 1 / every:
                purchase(driver, f"cust-{c}", rnd)
                events += 1
        if day % 30 == 0 or day == days:
            samples.append((day, driver.state_bytes() / customers))
            eps = events / (time.perf_counter() - began)
            print(f"  day {day:4}: {samples[-1][1]:10,.0f} state bytes per customer "
                  f"({events:,} events, {eps:,.0f} events/s)", flush=True)  # fmt: skip
    return samples


def flat(values: list[float]) -> tuple[float, bool]:
    positive = [v for v in values if v > 0]
    if not positive:
        return 1.0, True
    ratio = max(positive) / min(positive)
    return ratio, ratio <= FLAT


def report(rows: list[dict[str, Any]], samples: list[tuple[int, float]], window_days: int) -> bool:
    print("\nper event, at each history size (bytes: key + value)")
    columns = sorted({k for r in rows for k in r} - {"events"}, key=lambda k: (k.startswith("changelog"), k))
    print(f"  {'figure':22s}" + "".join(f"{r['events']:>12,}" for r in rows) + "   max/min from 10  goal")
    ok = True
    for col in columns:
        values = [r.get(col, 0) for r in rows]
        ratio, good = flat([v for r, v in zip(rows, values, strict=True) if r["events"] >= 10])
        verdict = "holds the history" if col in INFORMATIVE else "flat" if good else "GROWS"
        ok &= good or col in INFORMATIVE
        cells = "".join(f"{v:>12,.0f}" for v in values)
        print(f"  {col:22s}{cells}   {ratio:15.2f}  {verdict}")
    after = [s for d, s in samples if d >= window_days]
    ratio, good = flat(after)
    print(f"\nstate per customer after day {window_days} (the longer of the retention and expiry windows): "
          f"{', '.join(f'{s:,.0f}' for s in after) or 'no sample'}; max/min {ratio:.2f} "
          f"{'flat' if good else 'GROWS'}")  # fmt: skip
    return ok and good


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench growth")
    parser.add_argument("--sizes", default="1,10,100,1000,5000", help="history sizes of the one customer")
    parser.add_argument("--customers", type=int, default=100, help="customers of the simulated population")
    parser.add_argument("--days", type=int, default=730, help="days the population is simulated")
    parser.add_argument("--every", type=float, default=3.0, help="days between a customer's purchases, mean")
    args = parser.parse_args(argv or [])
    program = load_program(ROOT / "examples" / "program.yaml").model_copy(update={"version": 1})
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    expiry = max((r.expires_after_days or 0 for r in program.rewards), default=0)
    window = max(program.retention.events_days, expiry)
    print(f"one customer, purchases a minute apart: history sizes {sizes}", flush=True)
    rows = one_customer(program, sizes)
    print(f"population: {args.customers} customers over {args.days} days, a purchase every "
          f"{args.every:g} days each", flush=True)  # fmt: skip
    samples = population(program, args.customers, args.days, args.every)
    met = report(rows, samples, window)
    print(f"goal (every figure flat within 20%): {'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
