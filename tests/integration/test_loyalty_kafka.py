"""The loyalty processor on real Kafka with exactly-once transactions: cross-partition referral
and global coupon through the code-keyed topics, and a reservation that survives a restart
(state restored from the changelogs into an empty state dir) and then expires by its timer."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from plumbing.config_table import publish_program
from plumbing.kafka_util import committed_reader
from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.clock import ManualClock
from processors.runtime.runner import Runner, RuntimeOptions
from schemas.codec import decode, encode
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import EVENTS_LOYALTY, LOYALTY_RESULTS, topic_name

pytestmark = pytest.mark.integration
HOUR = 3_600_000

PROGRAM = Program.model_validate(
    {
        "campaigns": [
            {"id": "base", "condition": "properties.amount > 0", "formula": "properties.amount"},
            {
                "id": "ref",
                "kind": "referral",
                "triggers": ["REGISTRATION"],
                "referral": {"referrer_points": 500, "referee_points": 100},
            },
            {
                "id": "golden",
                "kind": "coupon",
                "formula": "1000",
                "coupon": {"codes": ["GOLDEN"], "single_use": "global"},
            },
        ]
    }
)


class Results:
    """Reads loyalty.results (committed only) and waits for conditions on it."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = committed_reader(settings, LOYALTY_RESULTS)
        self.records: list[dict[str, Any]] = []
        self.runner: Runner | None = None  # fail fast when the processor dies

    def wait_for(self, check: Callable[[list[dict]], Any], timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := check(self.records)):
            assert time.monotonic() < deadline, f"timed out; results: {self.summary()}"
            assert self.runner is None or self.runner.error is None, self.runner.error
            for msg in self.consumer.consume(500, 0.2):
                if not msg.error():
                    res = decode(msg.value(), "Result")
                    self.records.append({**res, "detail": orjson.loads(res["detail"])})
        return found

    def summary(self) -> list[tuple]:
        return [(r["customer_id"], r["type"], r["kind"], r["status"]) for r in self.records]


def where(**match: Any) -> Callable[[list[dict]], list[dict]]:
    return lambda records: [r for r in records if all(r.get(k) == v for k, v in match.items())]


@pytest.fixture
def results(settings: Settings) -> Iterator[Results]:
    reader = Results(settings)
    yield reader
    reader.consumer.close()


def send(settings: Settings, customer: str, type_: str = "PURCHASE", **fields: Any) -> str:
    now = int(time.time() * 1000)
    event = {
        "id": fields.pop("id", None) or str(uuid.uuid4()),
        "customer_id": customer,
        "type": type_,
        "issued_at": now,
        "received_at": now,
        "properties": orjson.dumps(fields.pop("properties", {})).decode(),
        "payload": orjson.dumps(fields.pop("payload", {})).decode(),
        **fields,
    }
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    producer.produce(topic_name(EVENTS_LOYALTY, settings), encode("Event", event), customer.encode())
    assert producer.flush(30) == 0
    return event["id"]


def runner(settings: Settings, state_dir: Path, clock: ManualClock) -> Runner:
    options = RuntimeOptions(state_dir=state_dir, instance_id="it", clock=clock)
    return Runner(LoyaltyProcessor(settings.partitions), settings, options).start()


def test_referral_and_global_coupon_cross_partitions(
    settings: Settings, results: Results, tmp_path: Path
) -> None:
    publish_program(settings, PROGRAM)
    run = results.runner = runner(settings, tmp_path, ManualClock())
    try:
        send(settings, "ann", "REGISTRATION", kind="REGISTER", payload={"customer": {}})
        results.wait_for(where(customer_id="ann", type="REGISTRATION"))
        send(settings, "bob", "REGISTRATION", kind="REGISTER", referral_code="ann")
        rewards = results.wait_for(lambda rs: len(where(type="REFERRAL")(rs)) == 2 and rs)
        by_customer = {r["customer_id"]: r["points"] for r in where(type="REFERRAL")(rewards)}
        assert by_customer == {"ann": 500, "bob": 100}

        send(settings, "cy", coupon_code="GOLDEN", properties={"amount": 1})
        (granted,) = results.wait_for(where(kind="COUPON_GRANTED"))
        assert granted["customer_id"] == "cy" and granted["points"] == 1000
        send(settings, "dee", coupon_code="GOLDEN", properties={"amount": 1})
        (rejected,) = results.wait_for(where(kind="COUPON_REJECTED"))
        assert rejected["customer_id"] == "dee" and rejected["status"] == "REJECTED"
        assert run.error is None
    finally:
        run.stop()


def test_reservation_survives_restart_then_expires(
    settings: Settings, results: Results, tmp_path: Path
) -> None:
    publish_program(settings, PROGRAM)
    clock = ManualClock()
    run = results.runner = runner(settings, tmp_path / "one", clock)
    try:
        send(settings, "ann", properties={"amount": 300})
        results.wait_for(where(customer_id="ann", status="RESOLVED"))
        order = send(
            settings,
            "ann",
            properties={"amount": 50},
            fulfilled=False,
            redeem=[{"reward_id": "POINTS", "amount": 120}],
        )
        (pending,) = results.wait_for(where(event_id=order, status="PENDING"))
        assert pending["wallet"]["pending"] == 120
    finally:
        run.stop()
    run = results.runner = runner(settings, tmp_path / "two", clock)  # empty disk: restore
    try:
        again = send(settings, "ann", id=order, properties={"amount": 50}, fulfilled=False)
        (dup,) = results.wait_for(lambda rs: [r for r in rs if r["detail"]["duplicate"]])
        assert again == order and dup["wallet"]["pending"] == 120
        clock.advance(24 * HOUR)
        (expired,) = results.wait_for(where(event_id=order, status="EXPIRED"))
        assert expired["wallet"]["points"] == 300
        assert expired["wallet"]["pending"] == 0
        # the customer's sequence came back with the state from the changelog
        sequence = pending["wallet"]["sequence"]
        assert dup["wallet"]["sequence"] == sequence
        assert expired["wallet"]["sequence"] == sequence + 1
        assert run.error is None
    finally:
        run.stop()


def test_overflowing_amounts_fail_and_leave_the_wallet_finite(
    settings: Settings, results: Results, tmp_path: Path
) -> None:
    """Straight from Kafka (no ingest bounds): 1e308 then 1.7e308 used to sum to inf, which
    JSON stores as null, and the wallet showed 0."""
    publish_program(settings, PROGRAM)
    run = results.runner = runner(settings, tmp_path, ManualClock())
    try:
        cid = f"ovf-{uuid.uuid4().hex[:8]}"
        for amount in (1e308, 1.7e308):
            send(settings, cid, properties={"amount": amount})
        failed = results.wait_for(lambda rs: len(found := where(customer_id=cid)(rs)) == 2 and found)
        assert {r["status"] for r in failed} == {"FAILED"}
        assert all(r["reason"].startswith("amount_out_of_range") for r in failed)
        send(settings, cid, properties={"amount": 7})
        (ok,) = results.wait_for(where(customer_id=cid, status="RESOLVED"))
        wallet = ok["wallet"]
        assert (wallet["points"], wallet["lifetime"], wallet["balance"]) == (7, 7, {"POINTS": 7})
        assert run.error is None
    finally:
        run.stop()
