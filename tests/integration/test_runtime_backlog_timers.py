"""Timers respect the backlog: a timer never fires ahead of input records produced before its
due time that still wait in the partition. A reservation's FULFILL, produced (behind a backlog
of the customer's purchases) before the reservation's expiry while the processor was down past
that expiry, is fulfilled when the processor comes back, not expired."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from plumbing.config_table import publish_program
from processors.runtime.clock import ManualClock
from schemas.codec import encode
from schemas.settings import Settings
from schemas.topics import EVENTS_LOYALTY, topic_name
from tests.integration.test_loyalty_kafka import PROGRAM, Results, results, runner, send, where

pytestmark = pytest.mark.integration
HOUR = 3_600_000
__all__ = ["results"]  # the fixture, imported for this module's tests


def backlog(settings: Settings, customer: str, n: int) -> None:
    """`n` small purchases of `customer` (their partition), produced at once."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    now = int(time.time() * 1000)
    for _ in range(n):
        event = {"id": str(uuid.uuid4()), "customer_id": customer, "type": "PURCHASE", "issued_at": now,
                 "received_at": now, "properties": '{"amount": 1}', "payload": "{}"}  # fmt: skip
        producer.produce(topic_name(EVENTS_LOYALTY, settings), encode("Event", event), customer.encode())
    assert producer.flush(30) == 0


def test_a_fulfill_waiting_in_the_backlog_comes_before_the_expiry_timer(
    settings: Settings, results: Results, tmp_path: Path
) -> None:
    publish_program(settings, PROGRAM)
    clock = ManualClock()
    run = results.runner = runner(settings, tmp_path, clock)
    try:
        send(settings, "ann", properties={"amount": 300})
        results.wait_for(where(customer_id="ann", status="RESOLVED"))
        order = send(settings, "ann", properties={"amount": 50}, fulfilled=False,
                     redeem=[{"reward_id": "POINTS", "amount": 120}])  # fmt: skip
        results.wait_for(where(event_id=order, status="PENDING"))
    finally:
        run.stop()
    backlog(settings, "ann", 1500)  # while the processor is down, long before the expiry...
    send(settings, "ann", "COMMAND", kind="FULFILL", target_event_id=order)
    clock.advance(25 * HOUR)  # ...which has passed when it comes back
    run = results.runner = runner(settings, tmp_path, clock)
    try:
        (fulfil,) = results.wait_for(where(kind="FULFILL"))
        assert run.error is None
    finally:
        run.stop()
    assert (fulfil["event_id"], fulfil["status"]) == (order, "RESOLVED"), fulfil["reason"]
    assert not where(event_id=order, status="EXPIRED")(results.records)
