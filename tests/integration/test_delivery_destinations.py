"""Destinations (batched HTTP), journey actions and DLQ replay against a real broker."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from processors.delivery.loop import DeliveryService, Options
from processors.delivery.replay import replay
from processors.delivery.testing import TopicReader, notification, produce
from processors.runtime.testing import wait_for
from schemas.program import Delivery, Destination, Program, Webhook
from schemas.settings import Settings
from schemas.topics import (
    AUDIENCES_MEMBERSHIP,
    DELIVERY_DLQ,
    EVENTS_LOYALTY,
    EVENTS_TRACKING,
    JOURNEYS_ACTIVITY,
    NOTIFICATIONS,
)

pytestmark = pytest.mark.integration
FAST = Delivery(retry_tiers=["200ms"], timeout_s=2)


@pytest.fixture
def service(settings: Settings, tmp_path) -> Iterator:
    holder: dict = {}

    def start(program: Program) -> DeliveryService:
        holder["program"] = program
        opts = Options(state_dir=tmp_path, group_id="delivery")
        holder["svc"] = DeliveryService(settings, lambda: holder["program"], opts).start()
        return holder["svc"]

    start.swap = lambda program: holder.update(program=program)  # a hot config change
    yield start
    if "svc" in holder:
        holder["svc"].stop()


def _event(type_: str, customer: str, kind: str = "EVENT") -> dict:
    now = int(time.time() * 1000)
    return {
        "id": str(uuid.uuid4()),
        "kind": kind,
        "customer_id": customer,
        "type": type_,
        "issued_at": now,
        "received_at": now,
        "properties": json.dumps({"amount": 10}),
    }


def test_destination_gets_filtered_events_in_batches(settings, receiver, service):
    dest = Destination(
        id="crm", url=receiver.url("/crm"), events=["PURCHASE", "vip"], batch_size=3, linger_ms=300
    )
    service(Program(destinations=[dest], delivery=FAST))
    purchases = [_event("PURCHASE", "c1") for _ in range(4)]
    produce(settings, EVENTS_LOYALTY, purchases)
    produce(settings, EVENTS_LOYALTY, [_event("PURCHASE", "c1", kind="FULFILL")])  # a command
    produce(settings, EVENTS_TRACKING, [_event("PAGE_VIEW", "c1")])  # not wanted
    member = {"audience_id": "vip", "customer_id": "c1", "action": "ENTER", "at": 1}
    produce(settings, AUDIENCES_MEMBERSHIP, [member])

    route = receiver.routes["/crm"]
    got = lambda: [e for b in route.unique.values() for e in b["events"]]  # noqa: E731
    wait_for(lambda: len(got()) == 5, timeout=20, what="5 destination items")
    assert {e["id"] for e in got() if e["type"] == "event"} == {p["id"] for p in purchases}
    assert [e["event"] for e in got() if e["type"] == "audience"] == ["AUDIENCE_ENTER"]
    assert all(len(b["events"]) <= 3 for b in route.unique.values())
    assert route.calls == len(route.unique)  # every batch once


def test_journey_webhook_action_uses_the_same_machinery(settings, receiver, service):
    receiver.routes["/journey"].fail_first = 1
    hook = Webhook(id="jhook", url=receiver.url("/journey"), events=["SOMETHING_ELSE"])
    service(Program(webhooks=[hook], delivery=FAST))
    activity = {
        "id": str(uuid.uuid4()),
        "journey_id": "welcome",
        "instance_id": "i1",
        "customer_id": "c9",
        "kind": "ACTION",
        "action": "webhook",
        "at": 1,
        "data": json.dumps({"target": "jhook", "payload": {"template": "hello"}}),
    }
    produce(settings, JOURNEYS_ACTIVITY, [activity, {**activity, "id": "x", "kind": "TRANSITION"}])
    route = receiver.routes["/journey"]
    wait_for(lambda: len(route.unique) == 1, timeout=20, what="journey webhook")
    (body,) = route.unique.values()
    assert body == {
        "event": "JOURNEY_ACTION",
        "data": {"template": "hello", "journey_id": "welcome", "customer_id": "c9"},
    }


def test_replay_resends_dead_letters_with_the_same_id(settings, receiver, service):
    route = receiver.routes["/down"]
    route.always = 503
    service(Program(webhooks=[Webhook(id="down", url=receiver.url("/down"), events=["E"])], delivery=FAST))
    note = notification("E", {"x": 1})
    produce(settings, NOTIFICATIONS, [note])
    TopicReader(settings, DELIVERY_DLQ).until(lambda s: len(s) == 1)

    route.always = None  # the receiver is fixed
    assert replay(settings, endpoint="down") == 1
    wait_for(lambda: note["id"] in route.unique, timeout=20, what="replayed delivery")
    assert replay(settings, endpoint="down") == 0  # replayed once


def test_program_changes_apply_without_restart(settings, receiver, service):
    old = Webhook(id="old", url=receiver.url("/old"), events=["E"])
    service(Program(webhooks=[old], delivery=FAST))
    receiver.routes["/new"].fail_first = 1
    new = Webhook(id="new", url=receiver.url("/new"), events=["E"])
    service.swap(Program(webhooks=[new], delivery=Delivery(retry_tiers=["300ms"])))
    note = notification("E", {})
    produce(settings, NOTIFICATIONS, [note])

    route = receiver.routes["/new"]
    wait_for(lambda: note["id"] in route.unique, timeout=20, what="delivery via the new tier")
    assert receiver.routes["/old"].calls == 0
    assert route.received[1][0] - route.received[0][0] >= 0.28
    retried = TopicReader(settings, "delivery.retry.300ms").until(lambda s: len(s) == 1)
    assert retried[0]["id"] == note["id"]
