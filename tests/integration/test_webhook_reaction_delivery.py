"""A campaign's webhook reaction through the real delivery service: the loyalty engine's pinned
notification goes over Kafka to the named webhook only, signed, retried after a failure with
the same webhook-id, and delivered with the rendered payload."""

from __future__ import annotations

import base64

import pytest

from processors.delivery.loop import DeliveryService, Options
from processors.delivery.testing import TopicReader, produce
from processors.runtime.testing import wait_for
from schemas.program import Delivery, Program, Webhook
from schemas.settings import Settings
from schemas.topics import DELIVERIES, NOTIFICATIONS
from tests.unit.test_loyalty_engine import BASE, Shop, program

pytestmark = pytest.mark.integration
SECRET = "whsec_" + base64.b64encode(b"reaction-secret-0123456789abcdef").decode()


def test_a_webhook_reaction_is_signed_retried_and_sent_to_its_endpoint_only(
    settings: Settings, receiver, tmp_path
):
    crm, other = receiver.routes["/crm"], receiver.routes["/other"]
    crm.fail_first, crm.secret = 1, [SECRET]
    hooks = [
        Webhook(id="crm", url=receiver.url("/crm"), events=["TIER_UPGRADE"], secret=SECRET),
        Webhook(id="other", url=receiver.url("/other"), events=["*"], secret=SECRET),
    ]
    payload = {"who": "{{ event.customer_id }}", "amount": "{{ properties.amount }}"}
    react = {**BASE, "webhook": {"endpoint": "crm", "event": "BIG_ORDER", "payload": payload}}
    prog = program(campaigns=[react], webhooks=[h.model_dump() for h in hooks])
    out = Shop(prog).send("ann", properties={"amount": 150})
    (note,) = [v for t, _, v in out if t == "notifications" and v["event"] == "BIG_ORDER"]

    live = Program(webhooks=hooks, delivery=Delivery(retry_tiers=["200ms", "500ms"], timeout_s=2))
    opts = Options(state_dir=tmp_path / "state", group_id="delivery-reaction")
    service = DeliveryService(settings, lambda: live, opts).start()
    try:
        produce(settings, NOTIFICATIONS, [note])
        wait_for(lambda: len(crm.unique) == 1, timeout=20, what="the reaction delivered after a failure")
        assert crm.unique == {note["id"]: {"event": "BIG_ORDER", "data": {"who": "ann", "amount": 150}}}
        assert crm.calls == 2 and crm.bad_signatures == 0
        attempts = TopicReader(settings, DELIVERIES).until(lambda s: len(s) >= 2)
        assert [(a["endpoint_id"], a["outcome"]) for a in attempts] == [
            ("crm", "RETRY"),
            ("crm", "DELIVERED"),
        ]
        assert {a["webhook_id"] for a in attempts} == {note["id"]}
        assert other.calls == 0  # subscribed to everything, but the reaction is pinned to crm
    finally:
        service.stop()
