"""`loyalty dlq list|replay` against a real broker: a record dead-lettered by the real runtime is
listed with what failed and where it came from, and once the cause is fixed `replay` puts the
same key and value bytes back on the source topic, where the processor now handles it."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from deploy import dlq
from deploy.cli import main
from plumbing.config_table import publish_program
from plumbing.kafka_util import committed_reader, watermarks
from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.api import Context, Processor, Record, Timer
from processors.runtime.dead_letters import DeadLetter, dlq_topic, ensure_dlq_topic, timer_value
from processors.runtime.runner import Runner, RuntimeOptions
from processors.runtime.testing import wait_for
from schemas import topics as t
from schemas.codec import decode, encode
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import topic_name

pytestmark = pytest.mark.integration


def event(customer: str) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {"id": str(uuid.uuid4()), "customer_id": customer, "type": "PURCHASE", "path": "loyalty",
            "issued_at": now, "received_at": now, "properties": '{"amount": 10}'}  # fmt: skip


class Flaky(Processor):
    """Raises on every record while `broken` is set (a bug), handles them once it is cleared."""

    name = "flaky"
    inputs = [t.EVENTS_LOYALTY]

    def __init__(self) -> None:
        self.broken = True
        self.handled: set[str] = set()
        self.lock = threading.Lock()

    def process(self, ctx: Context, record: Record) -> None:
        if self.broken:
            raise RuntimeError(f"bug while handling {record.value['id']}")
        with self.lock:
            self.handled.add(record.value["id"])


def dead_letters(settings: Settings, processor: str) -> list[dlq.DeadLetter]:
    try:
        return list(dlq.read_dead_letters(settings, processor))
    except dlq.DlqError:  # the runner has not created the topic yet
        return []


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def produce(settings: Settings, topic: str, key: bytes, value: bytes, **kw: Any) -> tuple[int, int]:
    """Produce like the system's producers do (murmur2_random); returns (partition, offset)."""
    config = {"bootstrap.servers": settings.kafka_bootstrap_servers, "partitioner": "murmur2_random"}
    producer = Producer(config)
    where: list[tuple[int, int]] = []

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        where.append((msg.partition(), msg.offset()))

    producer.produce(topic, value, key, on_delivery=delivered, **kw)
    assert producer.flush(30) == 0 and where
    return where[0]


def source_records(settings: Settings, base: str) -> list[Any]:
    """Every record of a (non-transactional) topic up to its current end."""
    consumer = committed_reader(settings, base)
    try:
        topic = topic_name(base, settings)
        parts = consumer.assignment()
        ends = {tp.partition: watermarks(consumer, TopicPartition(topic, tp.partition))[1] for tp in parts}
        seen: list[Any] = []
        wait_for(lambda: _drain(consumer, seen, ends), what=f"{topic} read to its end")
        return seen
    finally:
        consumer.close()


def _drain(consumer: Consumer, seen: list[Any], ends: dict[int, int]) -> bool:
    seen += [m for m in consumer.consume(500, 0.2) if not m.error()]
    return all(sum(1 for m in seen if m.partition() == p) >= end for p, end in ends.items())


def test_a_dead_letter_is_listed_and_replayed_after_the_fix(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = topic_name(t.EVENTS_LOYALTY, settings)
    poison = event("cust-1")
    value = encode("Event", poison)
    partition, offset = produce(settings, source, b"cust-1", value)

    processor = Flaky()
    run = Runner(processor, settings, RuntimeOptions(state_dir=tmp_path, instance_id="it")).start()
    try:
        (letter,) = wait_for(lambda: dead_letters(settings, "flaky"), timeout=60, what="the dead letter")
        assert run.error is None

        code, out, _ = run_cli(capsys, "dlq", "list", "flaky", "--json")
        assert code == 0
        (line,) = out.splitlines()
        got = orjson.loads(line)
        assert got == {
            "dlq_topic": topic_name(dlq_topic("flaky"), settings),
            "partition": letter.partition,
            "offset": letter.offset,
            "at": got["at"],
            "at_iso": got["at_iso"],
            "reason": "processing",
            "error_class": "RuntimeError",
            "error_message": f"bug while handling {poison['id']}",
            "processor": "flaky",
            "source_topic": source,
            "source_partition": partition,
            "source_offset": offset,
            "config_version": got["config_version"],
            "key": "cust-1",
            "key_hex": None,
            "value_size": len(value),
            "value_preview": None,  # Avro is binary
        }
        assert abs(got["at"] - time.time() * 1000) < 300_000 and got["at_iso"].endswith("Z")
        assert isinstance(got["config_version"], int)

        code, out, _ = run_cli(capsys, "dlq", "list", "flaky")
        assert code == 0
        assert f"{letter.position}  " in out and "processing  RuntimeError: bug while handling" in out
        assert f"source {source}[{partition}]@{offset}" in out
        assert f"key 'cust-1'  value {len(value)} bytes (binary)" in out
        assert out.rstrip().endswith(f"1 dead letter in {letter.topic}")

        processor.broken = False  # the fix is deployed
        before = len(source_records(settings, t.EVENTS_LOYALTY))
        code, out, _ = run_cli(capsys, "dlq", "replay", "flaky", "--offset", letter.position, "--dry-run")
        assert code == 0 and f"would replay {letter.position} -> {source}" in out
        assert len(source_records(settings, t.EVENTS_LOYALTY)) == before  # nothing produced

        code, out, err = run_cli(capsys, "dlq", "replay", "flaky", "--offset", letter.position)
        assert code == 0, err
        assert f"replayed {letter.position} -> {source}[{partition}]@" in out
        assert "append-only" in out

        wait_for(lambda: poison["id"] in processor.handled, timeout=60, what="the replayed record handled")
        assert run.error is None and run.healthy()
    finally:
        run.stop()

    replayed = [m for m in source_records(settings, t.EVENTS_LOYALTY) if m.headers()]
    (copy,) = replayed
    assert (copy.key(), copy.value(), copy.partition()) == (b"cust-1", value, partition)
    origin = f"{letter.topic}:{letter.partition}:{letter.offset}"
    assert dict(copy.headers()) == {dlq.REPLAYED_FROM: origin.encode()}
    # the dead letter is still there: replay never deletes (append-only topics)
    assert letter.position in {d.position for d in dead_letters(settings, "flaky")}


PROGRAM = Program.model_validate(
    {"campaigns": [{"id": "base", "condition": "properties.amount > 0", "formula": "properties.amount"}]}
)


def test_replay_all_feeds_the_loyalty_processor_and_refuses_timers(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dead letters written with the runtime's own headers: `--all` replays the record ones to
    the real loyalty processor and skips the timer; selecting the timer is refused."""
    topic = topic_name(dlq_topic("loyalty"), settings)
    ensure_dlq_topic(settings, topic)
    source = topic_name(t.EVENTS_LOYALTY, settings)
    good = event("cust-2")
    fixed = DeadLetter("processing", ValueError("campaign bug"), "loyalty", source, 1, 7, 3)
    produce(settings, topic, b"cust-2", encode("Event", good), headers=fixed.headers())
    timer = Timer("t-1", "cust-3", 1, {"kind": "expiry"})
    broken = DeadLetter("timer", KeyError("x"), "loyalty", "", -1, -1, 3)
    produce(settings, topic, b"cust-3", timer_value(timer), headers=broken.headers())
    letters = dead_letters(settings, "loyalty")
    assert sorted(d.reason for d in letters) == ["processing", "timer"]
    timer_letter = next(d for d in letters if d.reason == "timer")

    code, out, _ = run_cli(capsys, "dlq", "list", "loyalty", "--limit", "1", "--json")
    assert code == 0 and len(out.splitlines()) == 1
    code, out, _ = run_cli(capsys, "dlq", "list", "loyalty")
    assert "(a timer: no source record)" in out and "'{\"id\":\"t-1\"" in out  # printable preview

    code, _, err = run_cli(capsys, "dlq", "replay", "loyalty", "--offset", timer_letter.position)
    assert code == 1 and f"cannot replay {timer_letter.position}: a timer's dead letter" in err
    code, _, err = run_cli(capsys, "dlq", "replay", "loyalty", "--offset", "0:999")
    assert code == 1 and "no dead letter at 0:999" in err
    assert source_records(settings, t.EVENTS_LOYALTY) == []  # nothing was produced

    publish_program(settings, PROGRAM)
    reader = committed_reader(settings, t.LOYALTY_RESULTS)
    run = Runner(LoyaltyProcessor(settings.partitions), settings,
                 RuntimeOptions(state_dir=tmp_path, instance_id="it")).start()  # fmt: skip
    try:
        code, out, err = run_cli(capsys, "dlq", "replay", "loyalty", "--all")
        assert code == 0, err
        assert f"skipped {timer_letter.position}: a timer's dead letter" in out
        assert "replayed 1 dead letter;" in out
        results: list[dict] = []

        def result() -> list[dict]:
            results.extend(decode(m.value(), "Result") for m in reader.consume(500, 0.2) if not m.error())
            assert run.error is None, run.error
            return [r for r in results if r["event_id"] == good["id"]]

        (res,) = wait_for(result, timeout=120, what="the replayed purchase's result")
        assert res["customer_id"] == "cust-2" and res["status"] == "RESOLVED"
    finally:
        reader.close()
        run.stop()
