"""Restore benchmark: how long a processor takes to be ready again after a SIGKILL.

The example processor's `totals` changelog is filled with N records (transactions of 500, so
every batch ends with a commit marker) over all partitions; then the processor
(`python -m processors.runtime.example --static-membership`, its own process) is
1. started on an empty state dir (a cold restore of all N records),
2. killed with SIGKILL and started again on the same state dir (restored stores are flushed
   before processing and RocksDB's WAL keeps every commit after that, so only the changelog
   records after the last applied commit are read),
3. stopped with SIGTERM (the stores flush) and started again (checkpoints at the end: nothing to
   read).
Each time is from the kill (or the spawn) to the processor's "ready" log line, and from its
"processor started" line (Python start-up and imports excluded) to ready.
`python -m bench restore` (BENCH_RESTORE_RECORDS overrides N; `--ready-log MSG` names the log
line that means ready, for runtimes that log another one).

`--customers N` measures the loyalty processor instead (`loyalty process loyalty`): every
changelog of its stores filled with what the real processor stores (examples/program.yaml,
through the TestDriver) for N customers of `--events-per-customer` purchases each, copied with
the customer id changed, and the same three restarts; it reports the changelog bytes (keys +
values) the cold start read. Target (issue 19): 1,000,000 customers ready in under 30 s.

    python -m bench.restore --customers 1000000 [--events-per-customer 1] [--keep]
    python -m bench.restore --reuse PREFIX     # the same changelogs again, without filling
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Producer

from bench._child import check, stop
from bench._common import cpu_seconds, exited_children_cpu, fresh_settings
from bench.runtime import broker
from plumbing.topic_admin import delete_topics, ensure_topics
from processors.runtime.changelog import changelog_topic, ensure_changelogs
from processors.runtime.example import TOPICS
from processors.runtime.partitioner import partition_for
from processors.runtime.timers import TIMERS_STORE
from schemas.program import load_program
from schemas.settings import Settings
from schemas.topics import topic_name

ROOT = Path(__file__).resolve().parent.parent
READY_LOG = "partitions ready"
TEMPLATE = "c0000000"  # the template customer's id: 8 characters, as every copy's
TARGET_S = 30.0


def fill(settings: Settings, group: str, records: int) -> None:
    """N changelog records of the `totals` store, spread over every partition."""
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "transactional.id": f"{group}-fill"}
    )
    producer.init_transactions(30)
    topic = changelog_topic(group, "totals")
    for start in range(0, records, 500):
        producer.begin_transaction()
        for i in range(start, min(records, start + 500)):
            value = orjson.dumps({"count": i, "sum": 2 * i})
            producer.produce(topic, value, f"k{i}".encode(), partition=i % settings.partitions)
        producer.commit_transaction(30)


def loyalty_template(events: int) -> dict[str, list[tuple[bytes, bytes]]]:
    """{store: [(key, value)]} the real loyalty processor's changelogs keep, once compacted, for
    one customer (TEMPLATE) after `events` purchases a minute apart, the last one now (local
    indexes are never logged); keys without the id belong to the partition. Now, not
    bench.loyalty's fixed 2023 clock: a live customer's timers (inactivity, expiry, tier) are
    in the future, while from 2023 every timer of every customer was due at once and the first
    partitions restored fired millions of them on the loop that was still restoring the others
    (what the figure measured was that storm)."""
    from processors.loyalty.processor import LoyaltyProcessor
    from processors.runtime.testing import TestDriver
    from schemas.topics import EVENTS_LOYALTY

    program = load_program(ROOT / "examples" / "program.yaml").model_copy(update={"version": 1})
    start = (int(time.time()) // 60 - events) * 60_000
    driver = TestDriver(LoyaltyProcessor(partitions=1), program, now=start, keep_changelogs=True)
    for n in range(events):
        at = start + n * 60_000
        driver.clock.advance(at - driver.clock.now_ms())
        props = orjson.dumps({"amount": 20 + n % 200, "category": "coffee"}).decode()
        driver.send(EVENTS_LOYALTY, TEMPLATE, {"id": f"{TEMPLATE}-{n:06d}", "customer_id": TEMPLATE,
                                               "type": "PURCHASE", "issued_at": at, "received_at": at,
                                               "properties": props})  # fmt: skip
    assert driver.changelogs is not None
    compacted = {s: dict(records) for (s, _), records in driver.changelogs.items()}  # each key's last
    return {s: sorted((k, v) for k, v in compacted.get(s, {}).items() if v is not None)
            for s in [*driver.processor.stores, TIMERS_STORE]}  # fmt: skip


def fill_loyalty(settings: Settings, group: str, customers: int, events: int) -> tuple[int, int]:
    """Every loyalty changelog filled for `customers` copies of the template customer, each
    on its own partition; (records, key + value bytes) written."""
    template = loyalty_template(events)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 50,
                         "transactional.id": f"{group}-fill", "batch.size": 1_000_000})  # fmt: skip
    producer.init_transactions(30)
    records = size = 0
    old = TEMPLATE.encode()

    def send(topic: str, key: bytes, value: bytes, partition: int) -> None:
        while True:
            try:
                producer.produce(topic, value, key, partition=partition)
                return
            except BufferError:
                producer.poll(0.05)

    per_customer = [(changelog_topic(group, s), k, v) for s, kvs in template.items() for k, v in kvs
                    if old in k]  # fmt: skip
    per_partition = [(changelog_topic(group, s), k, v) for s, kvs in template.items() for k, v in kvs
                     if old not in k]  # fmt: skip
    producer.begin_transaction()
    for partition in range(settings.partitions):
        for topic, key, value in per_partition:
            send(topic, key, value, partition)
            records, size = records + 1, size + len(key) + len(value)
    for i in range(customers):
        new = f"c{i:07d}".encode()
        partition = partition_for(new, settings.partitions)
        for topic, key, value in per_customer:
            key, value = key.replace(old, new), value.replace(old, new)
            send(topic, key, value, partition)
            records, size = records + 1, size + len(key) + len(value)
        if i % 20_000 == 19_999:
            producer.commit_transaction(120)
            producer.begin_transaction()
    producer.commit_transaction(120)
    return records, size


def spawn(settings: Settings, state: Path, log: Path, loyalty: bool = False) -> subprocess.Popen:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "TOPIC_PREFIX": settings.topic_prefix,
        "TOPIC_PARTITIONS": str(settings.partitions),
        "LOG_LEVEL": "INFO",
    }
    module = ["deploy.cli", "process", "loyalty"] if loyalty else ["processors.runtime.example"]
    cmd = [sys.executable, "-m", *module, "--state-dir", str(state), "--instance-id", "bench",
           "--static-membership", "--metrics-port", "0"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"))


def wait_log(proc: subprocess.Popen, log: Path, message: str, timeout: float = 600) -> float:
    """Monotonic time at which `message` first appears in the JSON log (polled every 5 ms);
    ChildFailed with the log's tail if the processor exits first."""
    deadline, pending = time.monotonic() + timeout, ""
    with log.open() as lines:
        while time.monotonic() < deadline:
            pending += lines.read()  # only what was appended since the last look
            *complete, pending = pending.split("\n")
            for line in complete:
                if line.startswith("{") and orjson.loads(line).get("msg") == message:
                    return time.monotonic()
            check(proc, "the processor", log)
            time.sleep(0.005)
    raise TimeoutError(f"{message!r} not logged in {timeout:g} s: {log.read_text()[-2000:]}")


def run_once(settings: Settings, state: Path, log: Path, since: float, ready_log: str,
             loyalty: bool = False) -> tuple:  # fmt: skip
    proc = spawn(settings, state, log, loyalty)
    started = wait_log(proc, log, "processor started")
    ready = wait_log(proc, log, ready_log)
    return proc, ready - since, ready - started, cpu_seconds(proc.pid) + exited_children_cpu(proc.pid)


def restarts(settings: Settings, tmp: str, ready_log: str, loyalty: bool) -> list[float]:
    """The three restarts; each one's time from the kill (or the spawn) to ready, and the
    processor's CPU seconds until then (imports and its restore workers included): a figure
    the VM's load moves less."""
    state, took = Path(tmp) / "state", []

    def phase(label: str, since: float) -> subprocess.Popen:
        log = Path(tmp) / f"{label.split()[0]}-{label.split()[1]}.log"
        log.touch()
        proc, total, restore, cpu = run_once(settings, state, log, since, ready_log, loyalty)
        took.append(total)
        print(f"{label:40s} to ready {total:6.2f} s   from 'processor started' {restore:6.2f} s   "
              f"processor CPU {cpu:6.2f} s", flush=True)  # fmt: skip
        return proc

    proc = phase("cold start (empty state dir)", time.monotonic())
    proc.kill()
    killed = time.monotonic()
    proc.wait(60)
    proc = phase("after SIGKILL (from the kill)", killed)
    stop(proc, 120)
    proc = phase("after SIGTERM (checkpoints at the end)", time.monotonic())
    stop(proc, 120)
    return took


def keep_logs(tmp: Path, into: Path | None) -> None:
    """Copy the processor's log of each restart into `into` (--logs): where its time went."""
    if into is not None:
        into.mkdir(parents=True, exist_ok=True)
        for log in tmp.glob("*.log"):
            shutil.copy(log, into / log.name)


def main_loyalty(args: argparse.Namespace) -> int:
    from processors.loyalty.processor import LoyaltyProcessor

    program = load_program(ROOT / "examples" / "program.yaml").model_copy(update={"version": 1})
    if args.reuse:  # topics filled by an earlier --keep run
        base = Settings.from_env()
        settings = Settings(kafka_bootstrap_servers=base.kafka_bootstrap_servers, topic_prefix=args.reuse,
                            partitions=base.partitions)  # fmt: skip
        ensure_topics(settings)  # any input topic added since the fill
        print(f"reusing the changelogs under {args.reuse}", flush=True)
    else:
        settings = fresh_settings(program)
        group = topic_name("loyalty", settings)
        ensure_changelogs(settings, group, [*LoyaltyProcessor.stores, TIMERS_STORE])
        began = time.monotonic()
        records, size = fill_loyalty(settings, group, args.customers, args.events_per_customer)
        print(f"{args.customers:,} customers x {args.events_per_customer} purchase(s): {records:,} "
              f"changelog records, {size / 1e6:,.1f} MB of keys + values over {settings.partitions} "
              f"partitions under {settings.topic_prefix} (filled in {time.monotonic() - began:.0f} s)",
              flush=True)  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            try:
                took = restarts(settings, tmp, args.ready_log, loyalty=True)
            finally:
                keep_logs(Path(tmp), args.logs)
    finally:
        if not args.keep:
            delete_topics(settings.kafka_bootstrap_servers, settings.topic_prefix)
    verdict = "met" if max(took[:2]) < TARGET_S else "MISSED"
    print(f"cold start {took[0]:.1f} s, after SIGKILL {took[1]:.1f} s: target < {TARGET_S:g} s {verdict}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench restore")
    parser.add_argument("--ready-log", default=READY_LOG)
    parser.add_argument("--customers", type=int, help="restore the loyalty processor's state of N customers")
    parser.add_argument("--events-per-customer", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="leave the filled topics for --reuse")
    parser.add_argument("--reuse", metavar="PREFIX", help="restore the changelogs a --keep run filled")
    parser.add_argument("--logs", type=Path, metavar="DIR", help="keep each restart's processor log here")
    args = parser.parse_args(argv or [])
    if args.customers or args.reuse:
        with broker() as bootstrap:
            os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
            return main_loyalty(args)
    records = int(os.environ.get("BENCH_RESTORE_RECORDS", "20000"))
    with broker() as bootstrap, tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:6]}.")
        ensure_topics(settings)
        ensure_topics(settings, TOPICS)
        group = topic_name("counter", settings)
        ensure_changelogs(settings, group, ["totals", TIMERS_STORE])
        fill(settings, group, records)
        print(f"{records:,} changelog records over {settings.partitions} partitions", flush=True)
        restarts(settings, tmp, args.ready_log, loyalty=False)
        delete_topics(bootstrap, settings.topic_prefix)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
