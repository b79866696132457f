"""Delivery reads the event and membership topics for destinations only: while no destination is
enabled their records are counted as finished without being decoded (the offsets still move on,
so a destination added later does not get the backlog), and with one they are routed as before."""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka import Message

from processors.delivery import loop
from processors.delivery.holds import Holds
from processors.delivery.loop import DeliveryService
from processors.delivery.routing import endpoints, unrouted
from schemas.codec import encode
from schemas.program import Destination, Program, Webhook
from schemas.settings import Settings
from schemas.topics import AUDIENCES_MEMBERSHIP, EVENTS_LOYALTY, EVENTS_TRACKING, NOTIFICATIONS

HOOK = Webhook(id="h", url="https://h.example/h", events=["CUSTOMER_ACCUMULATION"])
DEST = Destination(id="d", url="https://d.example/d", events=["PURCHASE"])


def _event(n: int) -> bytes:
    return encode("Event", {
        "id": f"e{n}", "kind": "EVENT", "customer_id": "c1", "type": "PURCHASE", "path": "loyalty",
        "reference": None, "brand_id": None, "issued_at": 1, "received_at": 2,
        "properties": json.dumps({"amount": 5}), "fulfilled": False, "reserve": None, "redeem": [],
        "referral_code": None, "coupon_code": None, "tags": [], "metadata": "{}",
        "target_event_id": None, "payload": "{}", "reply_to": None,
    })  # fmt: skip


class _Dispatcher:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def blocked(self, _key: str) -> bool:
        return False

    def add_item(self, ep: Any, item: dict[str, Any], _done: Any) -> None:
        self.items.append((ep.key, item))


def _service(program: Program) -> DeliveryService:
    service = DeliveryService(Settings(topic_prefix=""), lambda: program)
    service.holds = Holds(None, None)
    service.dispatcher = _Dispatcher()
    return service


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    seen: list[bytes] = []
    real = loop.decode

    def counting(data: bytes, reader: str | None = None) -> dict[str, Any]:
        seen.append(data)
        return real(data, reader)

    monkeypatch.setattr(loop, "decode", counting)
    return seen


def test_events_without_an_enabled_destination_are_not_decoded_and_their_offsets_commit(decoded) -> None:
    program = Program(webhooks=[HOOK], destinations=[DEST.model_copy(update={"enabled": False})])
    service = _service(program)
    for offset in range(3):
        service._handle(Message(topic=EVENTS_LOYALTY, partition=0, offset=offset, value=_event(offset)))
    service._handle(Message(topic=EVENTS_LOYALTY, partition=1, offset=7, value=b"not avro"))
    assert decoded == []
    assert service.tracker.committable() == {(EVENTS_LOYALTY, 0): 3, (EVENTS_LOYALTY, 1): 8}
    assert service.dispatcher.items == []


def test_events_are_decoded_and_batched_once_a_destination_is_enabled(decoded) -> None:
    service = _service(Program(webhooks=[HOOK], destinations=[DEST]))
    service._handle(Message(topic=EVENTS_LOYALTY, partition=0, offset=0, value=_event(1)))
    assert len(decoded) == 1
    assert [(key, item["id"]) for key, item in service.dispatcher.items] == [("destination:d", "e1")]
    assert service.tracker.committable() == {(EVENTS_LOYALTY, 0): 0}  # the batch is not sent yet


def test_only_destination_topics_are_skipped() -> None:
    without, with_dest = Program(webhooks=[HOOK]), Program(webhooks=[HOOK], destinations=[DEST])
    for topic in (EVENTS_LOYALTY, EVENTS_TRACKING, AUDIENCES_MEMBERSHIP):
        assert unrouted(without, topic) and not unrouted(with_dest, topic)
    for topic in (NOTIFICATIONS, "journeys.activity", "delivery.retry.5s"):
        assert not unrouted(without, topic)


def test_the_routes_are_built_once_per_program_object_and_follow_a_swap() -> None:
    """endpoints() and unrouted() share one cache: rebuilt when another program object comes
    (the program is swapped, never mutated), so a disabled destination counts as none."""
    program = Program(webhooks=[HOOK], destinations=[DEST])
    first = endpoints(program)
    assert set(first) == {"webhook:h", "destination:d"}
    assert endpoints(program) is first and not unrouted(program, EVENTS_LOYALTY)
    disabled = Program(webhooks=[HOOK], destinations=[DEST.model_copy(update={"enabled": False})])
    assert unrouted(disabled, EVENTS_LOYALTY)
    assert not endpoints(disabled)["destination:d"].enabled
    assert endpoints(program) is not first and endpoints(program) == first  # rebuilt, the same
    assert not unrouted(program, EVENTS_LOYALTY)
