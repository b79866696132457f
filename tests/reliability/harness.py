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
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

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
        self.seqs: dict[str, list[int]] = defaultdict(list)  # the inputs' "seq", when they carry one
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
                    if "seq" in value:
                        self.seqs[value["key"]].append(value["seq"])

    def wait_for(self, sent: dict[str, int], timeout: float) -> bool:
        """Read until every key's latest count reaches what was sent; False at the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.counts.get(k) and self.counts[k][-1] >= n for k, n in sent.items()):
                return True
            self.poll(0.5)
        return False

    def positions(self) -> dict[int, int]:
        """The reader's position per partition (under read_committed it stops at the LSO)."""
        return {tp.partition: tp.offset for tp in self.consumer.position(self.consumer.assignment())}

    def close(self) -> None:
        self.consumer.close()


def assert_exactly_once(outputs: Outputs, sent: dict[str, int]) -> None:
    """Each input produced exactly one output: counts per key are exactly 1..n, in order."""
    assert set(outputs.counts) == set(sent)
    for key, n in sent.items():
        assert outputs.counts[key] == list(range(1, n + 1)), f"{key}: {len(outputs.counts[key])} outputs"


InputRecords = dict[str, list[tuple[int, int, dict]]]  # key -> [(partition, offset, value)]


def read_topic(settings: Settings, logical: str, timeout: float = 60.0) -> InputRecords:
    """Every record of a JSON topic from the beginning to its end now: key -> [(partition,
    offset, value)]. Read uncommitted (the load producer is not transactional)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "group.id": f"dump-{uuid.uuid4().hex}", "enable.auto.commit": False})  # fmt: skip
    try:
        topic = topic_name(logical, settings)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(settings.partitions)}  # fmt: skip
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        records: InputRecords = defaultdict(list)
        last = {p: -1 for p in ends}
        deadline = time.monotonic() + timeout
        while any(last[p] < end - 1 for p, end in ends.items()) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    continue
                last[msg.partition()] = msg.offset()
                records[msg.key().decode()].append((msg.partition(), msg.offset(), orjson.loads(msg.value())))
        return records
    finally:
        consumer.close()


def explain(settings: Settings, outputs: Outputs, acked: dict[str, list[tuple[int, int, int]]]) -> str:
    """Why some key's outputs are not exactly 1..n, told apart by evidence: `acked` is the load
    producer's acknowledged sends per key, (seq, partition, offset). Reads the input topic
    back: two input records for one acknowledged send (the same seq) is the producer's doing;
    one input (seq) with two outputs, or a count repeated, is the runtime's (exactly once
    broken); an input with no output and the processor's committed offset before the input's
    end is a processor behind or stuck; the output reader at a position below the output's
    end, with nothing more to read, is a transaction left open (the LSO held back)."""
    inputs = read_topic(settings, INPUT)
    group = topic_name("counter", settings)
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": group,
                      "enable.auto.commit": False})  # fmt: skip
    try:
        in_topic, out_topic = topic_name(INPUT, settings), topic_name(OUTPUT, settings)
        parts = range(settings.partitions)
        asked = [TopicPartition(in_topic, p) for p in parts]
        committed = {tp.partition: tp.offset for tp in probe.committed(asked, 10)}
        in_end = {p: probe.get_watermark_offsets(TopicPartition(in_topic, p), timeout=10)[1] for p in parts}
        out_end = {p: probe.get_watermark_offsets(TopicPartition(out_topic, p), timeout=10)[1] for p in parts}
    finally:
        probe.close()
    lines = [f"input end {in_end}, processor committed {committed}; output end {out_end}, "
             f"read_committed reader at {outputs.positions()}"]  # fmt: skip
    wrong = [k for k, sends in sorted(acked.items())
             if outputs.counts.get(k, []) != list(range(1, len(sends) + 1))]  # fmt: skip
    if len(wrong) > 8:
        lines.append(f"{len(wrong)} keys wrong; the first 8:")
    for key in wrong[:8]:
        sends, counts, seqs = acked[key], outputs.counts.get(key, []), outputs.seqs.get(key, [])
        records = inputs.get(key, [])
        by_seq: dict[int, list[int]] = defaultdict(list)
        for _, offset, value in records:
            by_seq[value["seq"]].append(offset)
        doubled_inputs = {s: o for s, o in by_seq.items() if len(o) > 1}
        seen: dict[int, int] = defaultdict(int)
        for seq in seqs:
            seen[seq] += 1
        doubled_outputs = sorted(s for s, n in seen.items() if n > 1)
        no_output = sorted(set(by_seq) - set(seen))
        repeated = sorted({c for c in counts if counts.count(c) > 1})
        lines.append(
            f"{key} (partition {records[0][0] if records else '?'}): {len(sends)} sends acknowledged, "
            f"{len(records)} input records, {len(counts)} outputs "
            f"(last count {counts[-1] if counts else None}); "
            f"seqs with two input records {doubled_inputs or 'none'}; seqs with two outputs "
            f"{doubled_outputs[:20] or 'none'}; counts repeated {repeated[:20] or 'none'}; "
            f"inputs with no output {len(no_output)} (first seqs {no_output[:5]})"
        )
    return "\n".join(lines)


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
