"""Restore benchmark: how long a processor takes to be ready again after a SIGKILL.

The example processor's `totals` changelog is filled with N records (transactions of 500, so
every batch ends with a commit marker) over all partitions; then the processor
(`python -m processors.runtime.example --static-membership`, its own process) is
1. started on an empty state dir (a cold restore of all N records),
2. killed with SIGKILL and started again on the same state dir (RocksDB runs without a WAL, so
   the unflushed state is replayed from the changelog),
3. stopped with SIGTERM (the stores flush) and started again (checkpoints at the end: nothing to
   read).
Each time is from the kill (or the spawn) to the processor's "ready" log line, and from its
"processor started" line (Python start-up and imports excluded) to ready.
`python -m bench restore` (BENCH_RESTORE_RECORDS overrides N; `--ready-log MSG` names the log
line that means ready, for runtimes that log another one).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Producer

from bench.runtime import broker
from deploy.topics import delete_topics, ensure_topics
from processors.runtime.changelog import changelog_topic, ensure_changelogs
from processors.runtime.example import TOPICS
from processors.runtime.task import TIMERS_STORE
from schemas.settings import Settings
from schemas.topics import topic_name

READY_LOG = "partitions ready"


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


def spawn(settings: Settings, state: Path, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "TOPIC_PREFIX": settings.topic_prefix,
        "TOPIC_PARTITIONS": str(settings.partitions),
        "LOG_LEVEL": "INFO",
    }
    cmd = [sys.executable, "-m", "processors.runtime.example", "--state-dir", str(state),
           "--instance-id", "bench", "--static-membership"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))


def wait_log(proc: subprocess.Popen, log: Path, message: str, timeout: float = 300) -> float:
    """Monotonic time at which `message` first appears in the JSON log (polled every 5 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log.read_text().splitlines():
            if line.startswith("{") and orjson.loads(line).get("msg") == message:
                return time.monotonic()
        time.sleep(0.005)
    raise TimeoutError(f"{message!r} not logged (exit {proc.poll()}): {log.read_text()[-2000:]}")


def run_once(settings: Settings, state: Path, log: Path, since: float, ready_log: str) -> tuple:
    proc = spawn(settings, state, log)
    started = wait_log(proc, log, "processor started")
    ready = wait_log(proc, log, ready_log)
    return proc, ready - since, ready - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench restore")
    parser.add_argument("--ready-log", default=READY_LOG)
    args = parser.parse_args(argv or [])
    records = int(os.environ.get("BENCH_RESTORE_RECORDS", "20000"))
    with broker() as bootstrap, tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:6]}.")
        ensure_topics(settings)
        ensure_topics(settings, TOPICS)
        group = topic_name("counter", settings)
        ensure_changelogs(settings, group, ["totals", TIMERS_STORE])
        fill(settings, group, records)
        state = Path(tmp) / "state"
        print(f"{records:,} changelog records over {settings.partitions} partitions", flush=True)

        def phase(label: str, since: float) -> subprocess.Popen:
            log = Path(tmp) / f"{label.split()[0]}-{label.split()[1]}.log"
            proc, total, restore = run_once(settings, state, log, since, args.ready_log)
            print(f"{label:40s} to ready {total:6.2f} s   from 'processor started' {restore:6.2f} s")
            return proc

        proc = phase("cold start (empty state dir)", time.monotonic())
        proc.kill()
        killed = time.monotonic()
        proc.wait()
        proc = phase("after SIGKILL (from the kill)", killed)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        proc = phase("after SIGTERM (checkpoints at the end)", time.monotonic())
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        delete_topics(bootstrap, settings.topic_prefix)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
