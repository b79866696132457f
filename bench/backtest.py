"""`loyalty backtest` speed (events/s) on a generated history, against the loyalty processor's
in-memory step rate in the same run.

The history is bench/loyalty.py's workload (purchases with coupons and redemptions, app opens,
reviews) spread over 30 days, written as a JSON-lines file of Event records; the backtest runs
as a user runs it (`python -m deploy.cli backtest ... --source FILE --json`, its own process)
with examples/program.yaml as the current program and the same program with the electronics
bonus doubled as the proposed one. The comparison is the loyalty processor's own step on
the same kind of events (`memory`: one program, the in-memory driver (sorted
memory backend), no clock moves or timers, no report). A backtest runs every event through two
programs, so `programs_per_event_vs_memory` = 2 x backtest events / memory events, per CPU
second (which holds on a shared machine where the wall clock swings with the load): 1.0 would
mean a backtest steps each program as fast as the bare step; the rest is the replay's clock
and timers, the report's bookkeeping and the command's start-up.

    python -m bench backtest
    python -m bench.backtest --events 50000 --customers 10000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench._common import rate
from bench.loyalty import workload
from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.testing import TestDriver
from schemas.program import load_program
from schemas.topics import EVENTS_LOYALTY

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "program.yaml"
DAY_MS = 86_400_000
WINDOW_DAYS = 30
DOUBLED = ('formula: "properties.amount * 0.5"', 'formula: "properties.amount * 1.0"')


def history(path: Path, events: int, customers: int, until_ms: int) -> int:
    """`events` Event records over the WINDOW_DAYS before `until_ms`, one JSON line each."""
    start = until_ms - WINDOW_DAYS * DAY_MS
    step = WINDOW_DAYS * DAY_MS // max(events, 1)
    with path.open("wb") as f:
        for n, (_, value) in enumerate(workload(events, customers, start=start)):
            at = start + n * step
            f.write(orjson.dumps({**value, "issued_at": at, "received_at": at}) + b"\n")
    return start


def run_backtest(folder: Path, source: Path, until: datetime) -> dict:
    """`loyalty backtest` in its own process; its report plus the command's wall time."""
    proposed = folder / "proposed.yaml"
    text = EXAMPLE.read_text()
    assert DOUBLED[0] in text, "examples/program.yaml changed: pick another formula to double"
    proposed.write_text(text.replace(*DOUBLED))
    cmd = [sys.executable, "-m", "deploy.cli", "backtest", "--program", str(proposed),
           "--current", str(EXAMPLE), "--source", str(source), "--since", f"{WINDOW_DAYS}d",
           "--until", until.isoformat(), "--partitions", "1", "--json", "--no-progress"]  # fmt: skip
    env = {**os.environ, "RECEIVER_URL": os.environ.get("RECEIVER_URL", "http://127.0.0.1:9")}
    began, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - began, _children_cpu() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"bench: loyalty backtest failed ({done.returncode}): {done.stderr[-2000:]}")
    return {**json.loads(done.stdout), "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2)}


def _children_cpu() -> float:
    """User + system CPU seconds of the finished children: on a shared machine the wall
    clock swings with the load, CPU per event holds."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def in_memory(records: list) -> dict:
    """The loyalty processor's own step on the same kind of events, one program, on the
    in-memory driver and no output round trip (as a backtest
    runs each of its two programs), with its CPU rate."""
    program = load_program(EXAMPLE).model_copy(update={"version": 1})
    driver = TestDriver(LoyaltyProcessor(1), program, now=records[0][1]["received_at"],
                        check_outputs=False)  # fmt: skip
    began, cpu = time.perf_counter(), time.process_time()
    for key, value in records:
        driver.send(EVENTS_LOYALTY, key, value)
        driver.emitted.clear()
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    return {"mode": "memory", "records": len(records), "records_per_s": rate(len(records), wall),
            "cpu_records_per_s": rate(len(records), cpu)}  # fmt: skip


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--memory-events", type=int, default=20_000, help="events in the in-memory run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv or [])
    until = datetime(2026, 12, 1, tzinfo=UTC)
    until_ms = int(until.timestamp() * 1000)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "history.jsonl"
        start = history(source, args.events, args.customers, until_ms)
        report = run_backtest(folder, source, until)
    memory = in_memory(workload(min(args.memory_events, args.events), args.customers, start=start))
    cpu_rate = rate(report["events"], report["cpu_seconds"])  # the whole command, start-up included
    print(json.dumps({
        "mode": "backtest",
        "events": report["events"],
        "customers": report["customers"],
        "events_per_s": report["events_per_second"],
        "replay_seconds": report["seconds"],
        "wall_seconds": report["wall_seconds"],
        "cpu_seconds": report["cpu_seconds"],
        "cpu_events_per_s": cpu_rate,
        "differences": report["differences"],
    }), flush=True)  # fmt: skip
    steps = round(2 * cpu_rate / memory["cpu_records_per_s"], 2)  # two programs per event
    print(json.dumps({**memory, "programs_per_event_vs_memory": steps}), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
