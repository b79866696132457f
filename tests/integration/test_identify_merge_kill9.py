"""Anonymous -> known merges (PATCH /customers/{id}/identify/anonymous's IDENTIFY command) on
real Kafka, racing with purchases to both ids, with `loyalty process loyalty` killed by SIGKILL
mid-run and restarted on an empty state dir: every known wallet ends with exactly what both ids
earned, each event's result is committed once and each merge is applied once."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from plumbing.config_table import publish_program
from processors.runtime.partitioner import partition_for
from schemas.codec import encode
from schemas.settings import Settings
from schemas.topics import EVENTS_LOYALTY, topic_name
from tests.integration.test_loyalty_kafka import PROGRAM, Results
from tests.integration.test_loyalty_kill9 import start

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
ROUNDS = 25  # purchases per id, amount = round number
IDENTIFY_AT = 8  # the round after which every anonymous id identifies (the rest races with it)
HOLD_AT = 10  # the round after which the sender waits for the kill to be due


def pairs(partitions: int) -> list[tuple[str, str]]:
    """Anonymous and known ids on different partitions (murmur2, as every producer here)."""
    out = [(f"anon-{i}", f"known-{i}") for i in range(40)]
    out = [
        (a, k)
        for a, k in out
        if partition_for(a.encode(), partitions) != partition_for(k.encode(), partitions)
    ]
    return out[:6]


class Sender:
    """Produces Event records keyed by customer with the stack's partitioner (murmur2_random:
    the processor re-keys the merge with it, so the known id's events must land alike)."""

    def __init__(self, settings: Settings) -> None:
        conf = {"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 5}
        self.producer = Producer({**conf, "partitioner": "murmur2_random"})
        self.topic = topic_name(EVENTS_LOYALTY, settings)
        self.sent: dict[str, str] = {}  # event id -> customer it was sent to

    def send(self, customer: str, type_: str = "PURCHASE", **fields) -> str:
        now = int(time.time() * 1000)
        event = {
            "id": str(uuid.uuid4()),
            "customer_id": customer,
            "type": type_,
            "issued_at": now,
            "received_at": now,
            "properties": orjson.dumps(fields.pop("properties", {})).decode(),
            "payload": orjson.dumps(fields.pop("payload", {})).decode(),
            **fields,
        }
        self.producer.produce(self.topic, encode("Event", event), customer.encode())
        self.producer.poll(0)
        self.sent[event["id"]] = customer
        return event["id"]

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


def race(sender: Sender, ids: list[tuple[str, str]], per_second: float, identified: threading.Event,
         go_on: threading.Event) -> None:  # fmt: skip
    """Purchases to both ids, the merges after round IDENTIFY_AT; after round HOLD_AT it waits
    for `go_on` (set just before the kill), so the kill lands while the rest still arrives
    however far behind a loaded machine runs the processor."""
    began, count = time.monotonic(), 0
    for n in range(1, ROUNDS + 1):
        for anon, known in ids:
            for who in (anon, known):
                sender.send(who, properties={"amount": n})
                count += 1
                time.sleep(max(0.0, began + count / per_second - time.monotonic()))
        if n == IDENTIFY_AT:
            for anon, known in ids:
                sender.send(anon, "IDENTIFY", kind="IDENTIFY", payload={"new_id": known})
            identified.set()
        if n == HOLD_AT:
            sender.flush()
            assert go_on.wait(180)
            began, count = time.monotonic(), 0
    sender.flush()


def test_merges_racing_with_purchases_on_both_ids_survive_kill_9(settings: Settings, tmp_path: Path) -> None:
    publish_program(settings, PROGRAM)
    ids = pairs(settings.partitions)
    assert len(ids) == 6
    results = Results(settings)
    sender = Sender(settings)
    log = tmp_path / "processor.log"
    proc = start(settings, tmp_path / "state-1", log)
    identified, go_on = threading.Event(), threading.Event()
    producer = threading.Thread(target=race, args=(sender, ids, 60, identified, go_on), daemon=True)
    try:
        registered = {
            sender.send(a, "REGISTRATION", kind="REGISTER", payload={"anonymous": True}) for a, _ in ids
        }
        sender.flush()
        results.wait_for(lambda rs: registered <= {r["event_id"] for r in rs}, timeout=90)
        producer.start()
        assert identified.wait(60)
        results.wait_for(lambda rs: len(rs) >= len(ids) * (2 * IDENTIFY_AT + 3), timeout=90)
        held = len(sender.sent)
        go_on.set()
        deadline = time.monotonic() + 30  # the sender is sending the rest again
        while len(sender.sent) < held + len(ids) and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # around the merges, under load
        proc.wait(10)
        assert producer.is_alive(), "the kill must land while events are still arriving"
        proc = start(settings, tmp_path / "state-2", log)  # empty disk: state from changelogs
        producer.join(60)
        merges = len(ids)

        def complete(rs: list[dict]) -> list[dict] | None:
            seen = {r["event_id"] for r in rs}
            merged = [r for r in rs if r["kind"] == "MERGE"]
            return rs if set(sender.sent) <= seen and len(merged) >= merges else None

        done = results.wait_for(complete, timeout=180)
        per_event: dict[str, int] = {}
        for r in done:
            per_event[r["event_id"]] = per_event.get(r["event_id"], 0) + 1
        assert set(per_event.values()) == {1}, "each event's (and merge's) result is committed once"
        expected = 2 * ROUNDS * (ROUNDS + 1) / 2  # both ids' purchases
        for anon, known in ids:
            mine = [r for r in done if r["customer_id"] == known]
            last = max(mine, key=lambda r: r["wallet"]["sequence"])
            assert (last["wallet"]["lifetime"], last["wallet"]["points"]) == (expected, expected), known
            (merge,) = [r for r in mine if r["kind"] == "MERGE"]
            assert merge["status"] == "RESOLVED" and merge["detail"]["merged_from"] == anon
            (seal,) = [r for r in done if r["customer_id"] == anon and r["kind"] == "IDENTIFY"]
            assert seal["status"] == "RESOLVED" and seal["detail"]["merged_into"] == known
            late = [r for r in mine if sender.sent.get(r["event_id"]) == anon]
            assert late, f"purchases sent to {anon} after its merge are credited to {known}"
    finally:
        proc.kill()
        proc.wait(10)
        results.consumer.close()
