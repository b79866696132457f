"""Delivery building blocks without Kafka: signing, policy, SSRF guard, offsets, routing."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME

from processors.delivery.holds import due_ms
from processors.delivery.offsets import OffsetTracker
from processors.delivery.policy import next_step, parse_duration, parse_retry_after, shed_step, tiers
from processors.delivery.routing import (
    BATCH_EVENT,
    destination_item,
    journey_notification,
    request_body,
    targets,
    webhook_targets,
)
from processors.delivery.urlguard import RefusedTarget, UrlGuard
from processors.delivery.verify import VerificationError, sign, signature_header, verify
from schemas.program import Delivery, Program, Webhook

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def _signed(body: bytes, secrets: list[str], ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": signature_header(secrets, "msg_1", ts, body),
    }


def test_signature_matches_standard_webhooks_reference() -> None:
    # Test vector from the Standard Webhooks specification / svix libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_verify_accepts_any_rotated_secret_and_raw_secrets() -> None:
    body = b'{"event":"X","data":{}}'
    headers = _signed(body, ["new-raw-secret", SECRET])
    assert verify(body, headers, SECRET) == {"event": "X", "data": {}}
    assert verify(body, headers, ["other", "new-raw-secret"])["event"] == "X"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b, h: (b + b" ", h),
        lambda b, h: (b, {**h, "webhook-id": "msg_2"}),
        lambda b, h: (b, {k: v for k, v in h.items() if k != "webhook-signature"}),
    ],
)
def test_verify_rejects_tampering(tamper) -> None:
    body, headers = tamper(b"{}", _signed(b"{}", [SECRET]))
    with pytest.raises(VerificationError):
        verify(body, headers, SECRET)


def test_verify_rejects_stale_timestamps() -> None:
    headers = _signed(b"{}", [SECRET], ts=int(time.time()) - 3600)
    with pytest.raises(VerificationError, match="tolerance"):
        verify(b"{}", headers, SECRET)


@pytest.mark.parametrize(
    ("text", "seconds"), [("200ms", 0.2), ("5s", 5), ("1m", 60), ("2h", 7200), ("1.5", 1.5)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("7") == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10
    assert parse_retry_after("nonsense") is None


def test_next_step_walks_the_tiers_then_dead_letters() -> None:
    tier_list = tiers(Delivery(retry_tiers=["200ms", "1s"]))
    first = next_step(1, tier_list, 1_000, None)
    assert (first.tier.topic, first.not_before_ms) == ("delivery.retry.200ms", 1_200)
    assert next_step(2, tier_list, 1_000, None).tier.name == "1s"
    assert next_step(3, tier_list, 1_000, None).dlq


def test_a_shed_message_moves_one_tier_further_each_time_it_is_shed() -> None:
    tier_list = tiers(Delivery(retry_tiers=["5s", "1m", "5m"]))
    first = shed_step(tier_list, None, 1_000)  # from an input topic
    assert first.tier.name == "5s" and first.not_before_ms == 6_000
    assert shed_step(tier_list, "5s", 1_000).tier.name == "1m"
    assert shed_step(tier_list, "5m", 1_000).tier.name == "5m"  # the last tier, never the DLQ
    assert shed_step(tiers(Delivery(retry_tiers=[])), None, 1_000).dlq


def test_retry_after_moves_to_the_first_tier_covering_it() -> None:
    tier_list = tiers(Delivery(retry_tiers=["200ms", "5s", "1m", "5m"]))
    step = next_step(1, tier_list, 1_000, 30)
    assert (step.tier.name, step.not_before_ms) == ("1m", 61_000)  # the tier's own delay
    assert next_step(1, tier_list, 1_000, 3).tier.name == "5s"
    assert next_step(3, tier_list, 1_000, 3).tier.name == "1m"  # never back to an earlier tier


def test_retry_after_is_capped_and_bounded_by_the_last_tier() -> None:
    tier_list = tiers(Delivery(retry_tiers=["200ms", "5s", "1m", "5m"]))
    assert next_step(1, tier_list, 0, 3600, max_retry_after_s=60).tier.name == "1m"
    assert next_step(1, tier_list, 0, 3600).tier.name == "5m"  # default cap 300 s
    step = next_step(1, tiers(Delivery(retry_tiers=["200ms"])), 1_000, 30)
    assert (step.tier.name, step.not_before_ms) == ("200ms", 1_200)  # no tier covers 30 s


def _check(url: str, **policy) -> None:
    asyncio.run(UrlGuard().check(url, Delivery(**policy)))


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",  # plain http to a non-allow-listed host
        "https://10.1.2.3/hook",  # private
        "https://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
        "https://[::1]:8443/hook",  # loopback over https, not allow-listed... resolved
        "ftp://example.com/x",
    ],
)
def test_guard_refuses_unsafe_targets(url: str) -> None:
    with pytest.raises(RefusedTarget):
        _check(url, allow_http_hosts=["127.0.0.1"])


def test_guard_allows_loopback_http_from_allow_list_and_private_when_allowed() -> None:
    _check("http://127.0.0.1:8080/hook")
    _check("https://10.1.2.3/hook", allow_private=True)
    _check("https://93.184.215.14/hook")  # public literal: no DNS needed


def test_offsets_commit_only_below_unfinished_work() -> None:
    t = OffsetTracker()
    tp = ("notifications", 0)
    t.add(tp, 0, 1)
    t.add(tp, 1, 2)
    t.add(tp, 2, 0)  # nothing to do
    assert t.committable() == {tp: 0}
    t.done(tp, 1)
    t.done(tp, 0)
    assert t.committable() == {tp: 1}
    t.mark_committed({tp: 1})
    t.done(tp, 1)
    assert t.committable() == {tp: 3}


def _program() -> Program:
    return Program(
        webhooks=[
            Webhook(id="a", url="https://a.example/h", events=["CUSTOMER_ACCUMULATION"]),
            Webhook(id="b", url="https://b.example/h", events=["*"]),
            Webhook(id="c", url="https://c.example/h", events=["X"], enabled=False),
        ]
    )


def test_webhooks_receive_only_their_events() -> None:
    note = {"event": "CUSTOMER_ACCUMULATION", "endpoint_id": None}
    assert [e.id for e in webhook_targets(_program(), note)] == ["a", "b"]
    assert [e.id for e in webhook_targets(_program(), {**note, "event": "X"})] == ["b"]
    pinned = {**note, "endpoint_id": "c"}  # retries and replays go to their endpoint only
    assert [e.id for e in webhook_targets(_program(), pinned)] == ["c"]


def test_webhook_body_is_event_and_data() -> None:
    note = {"event": "E", "data": json.dumps({"points": 5})}
    assert json.loads(request_body(note)) == {"event": "E", "data": {"points": 5}}


def test_journey_action_becomes_a_pinned_notification() -> None:
    activity = {
        "id": "act-1",
        "journey_id": "j1",
        "instance_id": "i1",
        "customer_id": "c1",
        "kind": "ACTION",
        "action": "webhook",
        "at": 5,
        "data": json.dumps({"target": "a", "payload": {"template": "welcome"}}),
    }
    kind, note = journey_notification(activity)
    assert (kind, note["endpoint_id"], note["event"]) == ("webhook", "a", "JOURNEY_ACTION")
    assert json.loads(note["data"]) == {
        "template": "welcome",
        "journey_id": "j1",
        "customer_id": "c1",
    }
    assert journey_notification({**activity, "kind": "TRANSITION"}) is None


def test_journey_action_as_the_journeys_processor_writes_it() -> None:
    data = {"journey_id": "j1", "node": "n2", "template": "t", "target": None, "customer_id": "c1"}
    data |= {"event": {"type": "PURCHASE"}, "profile": {"tier": "gold"}}
    activity = {"id": "a", "journey_id": "j1", "customer_id": "c1", "kind": "ACTION", "at": 1}
    _, note = journey_notification({**activity, "action": "webhook", "data": json.dumps(data)})
    assert (note["event"], note["endpoint_id"]) == ("JOURNEY_ACTION", None)
    sent = json.loads(note["data"])
    assert sent["event"] == {"type": "PURCHASE"} and sent["template"] == "t" and "target" not in sent


def test_destination_items_skip_commands() -> None:
    event = {"id": "e1", "type": "PURCHASE", "customer_id": "c", "issued_at": 1, "properties": "{}"}
    names, item = destination_item("events.loyalty", {**event, "kind": "EVENT"})
    assert names == {"PURCHASE"} and item["event"] == "PURCHASE"
    assert destination_item("events.loyalty", {**event, "kind": "FULFILL"}) is None


def test_each_input_topic_is_routed_to_its_endpoints() -> None:
    note = {"id": "n1", "event": "CUSTOMER_ACCUMULATION", "data": "{}", "endpoint_id": None}
    jobs, items = targets(_program(), "notifications", note)
    assert [(key, job["endpoint_id"]) for key, job in jobs] == [("webhook:a", "a"), ("webhook:b", "b")]
    assert items == []
    batch = {"id": "b1", "event": BATCH_EVENT, "data": '{"events": []}', "endpoint_id": "gone"}
    for tier_topic in ("delivery.retry.5s", "delivery.retry.90s"):  # a tier no longer configured too
        assert targets(_program(), tier_topic, batch) == ([("destination:gone", batch)], [])
    with pytest.raises(ValueError):  # not JSON: dead-lettered before anything is queued
        targets(_program(), "notifications", {**note, "data": "{oops"})


class _Msg:
    def __init__(self, written_ms: int) -> None:
        self.written_ms = written_ms

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self.written_ms


def test_a_retry_record_is_due_at_the_latest_its_tier_delay_after_it_was_written() -> None:
    legacy = {"not_before": 3_601_000}  # an uncapped Retry-After written by an older version
    assert due_ms(_Msg(1_000), legacy, "5s") == 6_000
    assert due_ms(_Msg(1_000), {"not_before": 3_000}, "5s") == 3_000
