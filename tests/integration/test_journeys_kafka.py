"""The journeys processor on real Kafka: cart abandonment with a moved clock, waits that
survive a kill -9 of the processor process and fire exactly once, and a journey entered from
an audience that the customer's leaving the audience exits (as the sink's tables show)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer

from plumbing.config_table import publish_program
from plumbing.kafka_util import committed_reader
from processors.audiences.processor import build as build_audiences
from processors.journeys.processor import build
from processors.runtime.clock import ManualClock
from processors.runtime.runner import Runner, RuntimeOptions
from schemas.codec import decode, encode
from schemas.program import Audience, Journey, Program
from schemas.settings import Settings
from schemas.topics import (
    EVENTS_LOYALTY,
    EVENTS_TRACKING,
    JOURNEYS_ACTIVITY,
    PROFILES_CHANGES,
    topic_name,
)
from sinks.sink import Sink

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MINUTE = 60_000


def cart_abandonment(wait_minutes: float = 30) -> Journey:
    return Journey.model_validate(
        {
            "id": "cart_abandonment",
            "entry_event": "ADD_TO_CART",
            "exit_events": ["PURCHASE"],
            "nodes": [
                {"id": "start", "kind": "start"},
                {"id": "wait", "kind": "wait"},
                {"id": "email", "kind": "action", "action": "email", "template": "cart"},
                {"id": "end", "kind": "end"},
            ],
            "edges": [
                {"from": "start", "to": "wait"},
                {"from": "wait", "to": "email", "wait_minutes": wait_minutes},
                {"from": "email", "to": "end"},
            ],
        }
    )


def send_events(settings: Settings, events: list[tuple[str, str]]) -> None:
    """Produce (customer_id, type) events; PURCHASE goes to events.loyalty, others tracking."""
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "partitioner": "murmur2_random"}
    )
    now = int(time.time() * 1000)
    for customer_id, type_ in events:
        base = EVENTS_LOYALTY if type_ == "PURCHASE" else EVENTS_TRACKING
        value = {
            "id": str(uuid.uuid4()),
            "customer_id": customer_id,
            "type": type_,
            "path": "loyalty" if type_ == "PURCHASE" else "tracking",
            "issued_at": now,
            "received_at": now,
        }
        producer.produce(topic_name(base, settings), encode("Event", value), customer_id.encode())
    assert producer.flush(30) == 0


class Activity:
    """Reads journeys.activity (committed records only) and waits for conditions on it."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = committed_reader(settings, JOURNEYS_ACTIVITY)
        self.records: list[dict[str, Any]] = []
        self.alive: Callable[[], None] = lambda: None  # raises when the processor died
        self.describe: Callable[[], str] = lambda: ""  # e.g. the processor's log, on failure

    def wait_for(self, check: Callable[[list[dict]], bool], timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while not check(self.records):
            self.alive()
            assert time.monotonic() < deadline, (
                f"timed out; activity so far: {self.kinds()}\n{self.describe()}"
            )
            for msg in self.consumer.consume(500, 0.2):
                if not msg.error():
                    self.records.append(decode(msg.value(), "JourneyActivity"))
        return self.records

    def kinds(self, kind: str | None = None) -> list[tuple[str, str]]:
        return [(r["customer_id"], r["kind"]) for r in self.records if kind in (None, r["kind"])]

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def activity(settings: Settings) -> Iterator[Activity]:
    reader = Activity(settings)
    yield reader
    reader.close()


def count(kind: str, n: int) -> Callable[[list[dict]], bool]:
    return lambda records: sum(r["kind"] == kind for r in records) >= n


def test_cart_abandonment_email_after_moving_the_clock(
    settings: Settings, activity: Activity, tmp_path: Path
) -> None:
    publish_program(settings, Program(journeys=[cart_abandonment()]))
    clock = ManualClock(int(time.time() * 1000))
    options = RuntimeOptions(state_dir=tmp_path, instance_id="it", clock=clock)
    runner = Runner(build(), settings, options).start()

    def alive() -> None:
        if runner.error is not None:
            raise AssertionError("processor failed") from runner.error

    activity.alive = alive
    activity.describe = lambda: f"runner: assigned {sorted(runner.tasks)}, in_txn {runner.in_txn}"
    try:
        send_events(settings, [("buyer", "ADD_TO_CART"), ("abandoner", "ADD_TO_CART")])
        activity.wait_for(count("TRANSITION", 2))  # both wait at the 30-minute node
        send_events(settings, [("buyer", "PURCHASE")])
        activity.wait_for(count("EXIT", 1))
        clock.advance(30 * MINUTE)
        records = activity.wait_for(count("COMPLETE", 1))
        actions = [r for r in records if r["kind"] == "ACTION"]
        assert [(a["customer_id"], a["action"]) for a in actions] == [("abandoner", "email")]
        assert json.loads(actions[0]["data"])["template"] == "cart"
        assert ("buyer", "EXIT") in activity.kinds() and ("buyer", "ACTION") not in activity.kinds()
        assert runner.error is None
    finally:
        runner.stop()


def start_processor(settings: Settings, state_dir: Path, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "TOPIC_PREFIX": settings.topic_prefix,
        "TOPIC_PARTITIONS": str(settings.partitions),
    }
    args = ["process", "journeys", "--state-dir", str(state_dir), "--instance-id", "kill9"]
    return subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", *args, "--metrics-port", "0"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def test_waits_survive_kill_9_and_fire_once(settings: Settings, activity: Activity, tmp_path: Path) -> None:
    customers = [f"c{i}" for i in range(20)]
    publish_program(settings, Program(journeys=[cart_abandonment(wait_minutes=0.2)]))  # 12 s
    log = tmp_path / "processor.log"
    activity.describe = lambda: log_tail(log)
    proc = start_processor(settings, tmp_path / "state-1", log)
    activity.alive = lambda: running(proc, log)
    try:
        send_events(settings, [(c, "ADD_TO_CART") for c in customers])
        activity.wait_for(count("TRANSITION", len(customers)), timeout=90)  # waits committed
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert not activity.kinds("ACTION")
        # a fresh state dir: the timers must come back from the changelog, not the local disk
        proc = start_processor(settings, tmp_path / "state-2", log)
        activity.alive = lambda: running(proc, log)
        activity.wait_for(count("COMPLETE", len(customers)), timeout=90)
        activity.alive = lambda: None
        proc.send_signal(signal.SIGTERM)  # a clean stop commits; then the topic is final
        assert proc.wait(30) == 0, log_tail(log)
        activity.wait_for(lambda _: activity_at_end(activity))
        emails = sorted(c for c, _ in activity.kinds("ACTION"))
        assert emails == sorted(customers), "each wait fired exactly once"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def log_tail(log: Path) -> str:
    lines = [line for line in log.read_text().splitlines() if not line.startswith("%")]
    return "\n".join(lines[-30:])


def running(proc: subprocess.Popen, log: Path) -> None:
    if proc.poll() is not None:
        raise AssertionError(f"processor exited {proc.returncode}:\n{log_tail(log)}")


def activity_at_end(activity: Activity) -> bool:
    """True once every partition of journeys.activity has been read to its (stable) end."""
    consumer = activity.consumer
    for tp in consumer.assignment():
        _, high = consumer.get_watermark_offsets(tp, timeout=10)
        position = consumer.position([tp])[0].offset
        if position < high - 1:  # the last offset may be a transaction marker
            return False
    return True


def test_leaving_the_audience_exits_the_journey(
    cfg: Settings, sink: Sink, activity: Activity, tmp_path: Path
) -> None:
    """audiences -> audiences.membership -> journeys -> journeys.activity -> sink, all real: a
    customer enters `winback` from the audience `no_purchase`, buys (a profile change that drops
    them from the audience) and the instance is EXITED with reason audience_leave."""
    winback = Journey.model_validate(
        {
            "id": "winback",
            "entry_audience": "no_purchase",
            "nodes": [
                {"id": "start", "kind": "start"},
                {"id": "push", "kind": "action", "action": "push"},
                {"id": "end", "kind": "end"},
            ],
            "edges": [{"from": "start", "to": "push", "wait_minutes": 60}, {"from": "push", "to": "end"}],
        }
    )
    audience = Audience(id="no_purchase", condition="profile.purchase_count == 0")
    publish_program(cfg, Program(audiences=[audience], journeys=[winback]))
    runners = [
        Runner(build_audiences(), cfg, RuntimeOptions(state_dir=tmp_path / "aud", instance_id="a")),
        Runner(build(), cfg, RuntimeOptions(state_dir=tmp_path / "jrn", instance_id="j")),
    ]
    for r in runners:
        r.start()

    def alive() -> None:
        for r in runners:
            if r.error is not None:
                raise AssertionError(f"{r} failed") from r.error

    activity.alive = alive
    producer = Producer({"bootstrap.servers": cfg.kafka_bootstrap_servers, "partitioner": "murmur2_random"})

    def profile(purchases: int) -> None:
        flat = {"customer_id": "leaver", "identified": True, "purchase_count": purchases}
        value = {"customer_id": "leaver", "updated_at": int(time.time() * 1000), "profile": json.dumps(flat)}
        producer.produce(topic_name(PROFILES_CHANGES, cfg), encode("Profile", value), b"leaver")
        assert producer.flush(30) == 0

    try:
        profile(0)
        activity.wait_for(count("ENTER", 1))
        profile(1)
        records = activity.wait_for(count("EXIT", 1))
        assert [r["kind"] for r in records] == ["ENTER", "EXIT"]
        assert json.loads(records[-1]["data"]) == {"reason": "audience_leave:no_purchase"}
        row = wait_for_row(
            cfg.database_url,
            "SELECT i.status, t.kind, t.data->>'reason' FROM journey_instances i "
            "JOIN journey_transitions t USING (instance_id) "
            "WHERE i.customer_id = 'leaver' AND t.kind = 'EXIT'",
        )
        assert row == ("EXITED", "EXIT", "audience_leave:no_purchase")
        alive()
    finally:
        for r in runners:
            r.stop()


def wait_for_row(url: str, sql: str, timeout: float = 60) -> tuple:
    """The first row of `sql` once the sink has written it."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while (row := conn.execute(sql).fetchone()) is None:
            assert time.monotonic() < deadline, f"no row for {sql}"
            time.sleep(0.2)
    return row
