"""Helpers for the runtime reliability tests: a load producer, processor subprocesses and a
read_committed reader of the counter processor's outputs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer

from processors.runtime.example import INPUT, OUTPUT
from schemas.settings import Settings
from schemas.topics import topic_name


class Load(threading.Thread):
    """Produces `total` records over `keys` keys at about `rate`/s in the background."""

    def __init__(self, settings: Settings, total: int, keys: int, rate: int, extra: dict | None = None,
                 poison_every: int = 0):  # fmt: skip
        super().__init__(daemon=True)
        self.settings, self.total, self.keys, self.rate = settings, total, keys, rate
        self.extra = extra or {}
        self.poison_every = poison_every  # every n-th record is not JSON (a dead letter)
        self.sent: dict[str, int] = defaultdict(int)
        self.poisoned = 0

    def run(self) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
                "linger.ms": 5,
            }
        )
        topic = topic_name(INPUT, self.settings)
        started = time.monotonic()
        for i in range(self.total):
            key = f"key-{i % self.keys}"
            if self.poison_every and i % self.poison_every == self.poison_every - 1:
                producer.produce(topic, f"poison {i}".encode(), key.encode())
                self.poisoned += 1
                continue
            producer.produce(topic, orjson.dumps({"amount": 2, **self.extra}), key.encode())
            self.sent[key] += 1
            if i % 200 == 0:
                producer.poll(0)
                ahead = i / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        assert producer.flush(60) == 0


class ProcessorProcess:
    """The example counter processor as a real OS process (so it can be SIGKILLed). Every one
    started is in `STARTED` until `kill_leftovers()`: a failed test must not leave one running."""

    STARTED: list[ProcessorProcess] = []

    def __init__(self, settings: Settings, state_dir: Path, instance_id: str, log_dir: Path,
                 supervised: bool = False) -> None:  # fmt: skip
        self.settings, self.state_dir, self.instance_id = settings, state_dir, instance_id
        self.supervised = supervised  # under deploy.local.supervise, which restarts it on exit
        self.log_path = log_dir / f"{instance_id}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> ProcessorProcess:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.settings.kafka_bootstrap_servers,
            "TOPIC_PREFIX": self.settings.topic_prefix,
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                *(["deploy.local.supervise"] if self.supervised else []),
                "processors.runtime.example",
                "--state-dir",
                str(self.state_dir),
                "--instance-id",
                self.instance_id,
                "--static-membership",
                "--metrics-port",
                "0",  # any free port: several instances (and leftovers) share the host
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        ProcessorProcess.STARTED.append(self)
        return self

    @classmethod
    def kill_leftovers(cls) -> None:
        for proc in cls.STARTED:
            if proc.proc is not None and proc.proc.poll() is None:
                proc.proc.kill()
                proc.proc.wait(30)
        cls.STARTED.clear()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Outputs:
    """Reads counter.output with read_committed and keeps every record per key."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self.consumer.subscribe([topic_name(OUTPUT, settings)])
        self.counts: dict[str, list[int]] = defaultdict(list)
        self.reminders: dict[str, int] = defaultdict(int)

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for msg in self.consumer.consume(1000, 0.2):
                if msg.error():
                    continue
                value = orjson.loads(msg.value())
                if value.get("reminder"):
                    self.reminders[value["key"]] += 1
                else:
                    self.counts[value["key"]].append(value["count"])

    def wait_for(self, sent: dict[str, int], timeout: float) -> None:
        """Read until every key's latest count reaches what was sent (or the timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.counts.get(k) and self.counts[k][-1] >= n for k, n in sent.items()):
                return
            self.poll(0.5)

    def close(self) -> None:
        self.consumer.close()


def assert_exactly_once(outputs: Outputs, sent: dict[str, int]) -> None:
    """Each input produced exactly one output: counts per key are exactly 1..n, in order."""
    assert set(outputs.counts) == set(sent)
    for key, n in sent.items():
        assert outputs.counts[key] == list(range(1, n + 1)), f"{key}: {len(outputs.counts[key])} outputs"


def latest_metrics_port(log_text: str) -> int:
    """The metrics port a service's log names last (a supervised one serves on a new port
    after each restart); 0 before it says."""
    found = re.findall(r'"msg":"health and metrics served".*?"port":(\d+)', log_text)
    return int(found[-1]) if found else 0


def healthz(port: int) -> int:
    """GET /healthz on `port`: the status code, or 0 when nothing answers."""
    if not port:
        return 0
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status
    except (urllib.error.URLError, OSError) as exc:
        return getattr(exc, "code", 0)
