"""Webhook delivery against a real broker and a real HTTP receiver on loopback."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest

from plumbing.config_table import publish_program
from processors.delivery.loop import DeliveryService, Options
from processors.delivery.receiver import Receiver
from processors.delivery.testing import TopicReader, notification, produce
from processors.runtime.testing import wait_for
from schemas.program import Delivery, Program, Webhook
from schemas.settings import Settings
from schemas.topics import DELIVERIES, DELIVERY_DLQ, NOTIFICATIONS

pytestmark = pytest.mark.integration
SECRET = "whsec_" + base64.b64encode(b"integration-secret-0123456789ab").decode()
FAST = Delivery(retry_tiers=["200ms", "500ms"], timeout_s=2)


@pytest.fixture
def run_service(settings: Settings, tmp_path) -> Iterator:
    services: list[DeliveryService] = []

    def start(program: Program, publish: bool = False) -> DeliveryService:
        """Publish to program.config (the real path) or hand the program in directly (fast)."""
        if publish:
            publish_program(settings, program)
        opts = Options(state_dir=tmp_path / "state", group_id=f"delivery-{len(services)}")
        source = None if publish else (lambda: program)
        service = DeliveryService(settings, source, opts).start()
        services.append(service)
        return service

    yield start
    for s in services:
        s.stop()


def _hook(receiver: Receiver, id_: str, events: list[str], secret: str = SECRET) -> Webhook:
    return Webhook(id=id_, url=receiver.url(f"/{id_}"), events=events, secret=secret)


def test_flaky_endpoint_gets_each_webhook_once_after_dedup(settings, receiver, run_service):
    flaky = receiver.routes["/flaky"]
    flaky.fail_first, flaky.secret = 2, [SECRET]
    other = receiver.routes["/other"]
    run_service(
        Program(
            webhooks=[
                _hook(receiver, "flaky", ["CUSTOMER_ACCUMULATION"]),
                _hook(receiver, "other", ["TIER_UPGRADE"]),
            ],
            delivery=FAST,
        ),
        publish=True,
    )
    note = notification("CUSTOMER_ACCUMULATION", {"points": 42})
    produce(settings, NOTIFICATIONS, [note])

    wait_for(lambda: len(flaky.unique) == 1, timeout=20, what="delivery after two failures")
    assert flaky.calls == 3 and flaky.bad_signatures == 0
    assert flaky.unique == {note["id"]: {"event": "CUSTOMER_ACCUMULATION", "data": {"points": 42}}}
    ids = {h.get("webhook-id") or h.get("Webhook-Id") for _, h, _ in flaky.received}
    assert ids == {note["id"]}  # stable across retries
    gaps = [b[0] - a[0] for a, b in zip(flaky.received, flaky.received[1:], strict=False)]
    assert gaps[0] >= 0.18 and gaps[1] >= 0.45  # tier delays honoured
    assert other.calls == 0  # not subscribed to this event

    attempts = TopicReader(settings, DELIVERIES).until(lambda s: len(s) >= 3)
    outcomes = [(a["attempt"], a["outcome"], a["status_code"]) for a in attempts]
    assert outcomes == [(1, "RETRY", 500), (2, "RETRY", 500), (3, "DELIVERED", 200)]
    assert {a["webhook_id"] for a in attempts} == {note["id"]}


def test_410_disables_the_endpoint(settings, receiver, run_service):
    receiver.routes["/gone"].always = 410
    run_service(Program(webhooks=[_hook(receiver, "gone", ["E"])], delivery=FAST))
    first, second = notification("E", {"n": 1}), notification("E", {"n": 2})
    produce(settings, NOTIFICATIONS, [first])
    attempts = TopicReader(settings, DELIVERIES)
    attempts.until(lambda s: len(s) == 1)
    produce(settings, NOTIFICATIONS, [second])
    seen = attempts.until(lambda s: len(s) == 2)
    assert [(a["outcome"], a["status_code"]) for a in seen] == [
        ("DISABLED", 410),
        ("DISABLED", None),
    ]
    assert receiver.routes["/gone"].calls == 1  # disabled: the second one is not sent
    dlq = TopicReader(settings, DELIVERY_DLQ).until(lambda s: len(s) == 2)
    assert {d["id"] for d in dlq} == {first["id"], second["id"]}  # kept for replay


def test_failing_endpoint_dead_letters_while_healthy_one_keeps_its_latency(settings, receiver, run_service):
    receiver.routes["/bad"].always = 500
    receiver.routes["/slow"].delay_s = 2  # longer than the timeout
    run_service(
        Program(
            webhooks=[
                _hook(receiver, "bad", ["E"]),
                _hook(receiver, "slow", ["E"]),
                _hook(receiver, "good", ["E"]),
            ],
            delivery=Delivery(retry_tiers=["200ms", "500ms"], timeout_s=0.5, max_concurrency_per_endpoint=4),
        )
    )
    notes = [notification("E", {"n": i}, customer=f"c{i}") for i in range(12)]
    started = time.monotonic()
    produce(settings, NOTIFICATIONS, notes)
    good = receiver.routes["/good"]
    wait_for(lambda: len(good.unique) == 12, timeout=10, what="healthy endpoint")
    assert time.monotonic() - started < 2.5  # not held up by 12 x 0.5 s timeouts of /slow
    assert good.calls == 12

    dlq = TopicReader(settings, DELIVERY_DLQ).until(lambda s: len(s) == 24, timeout=30)
    by_endpoint = {ep: [d for d in dlq if d["endpoint_id"] == ep] for ep in ("bad", "slow")}
    assert {d["id"] for d in by_endpoint["bad"]} == {n["id"] for n in notes}
    assert {d["attempt"] for d in dlq} == {3}  # first try + two tiers
    assert {d["last_error"] for d in by_endpoint["bad"]} == {"HTTP 500"}
    assert all("Timeout" in d["last_error"] for d in by_endpoint["slow"])


def test_retry_after_is_honoured(settings, receiver, run_service):
    route = receiver.routes["/busy"]
    route.fail_first, route.fail_status, route.retry_after = 1, 429, "1"
    tiers = Delivery(retry_tiers=["200ms", "1s"], timeout_s=2)  # "1s" covers the Retry-After
    run_service(Program(webhooks=[_hook(receiver, "busy", ["E"])], delivery=tiers))
    produce(settings, NOTIFICATIONS, [notification("E", {})])
    wait_for(lambda: len(route.unique) == 1, timeout=20, what="delivery after 429")
    assert route.received[1][0] - route.received[0][0] >= 0.95


def test_private_targets_are_refused(settings, receiver, run_service):
    hook = Webhook(id="meta", url="https://169.254.169.254/latest", events=["E"])
    run_service(Program(webhooks=[hook], delivery=FAST))
    note = notification("E", {})
    produce(settings, NOTIFICATIONS, [note])
    (dead,) = TopicReader(settings, DELIVERY_DLQ).until(lambda s: len(s) == 1)
    assert dead["id"] == note["id"] and dead["last_error"].startswith("refused")


def test_a_redirect_is_dead_lettered_at_once_saying_so(settings, receiver, run_service):
    moved = receiver.routes["/moved"]
    moved.always, moved.headers = 302, {"location": receiver.url("/elsewhere")}
    run_service(Program(webhooks=[_hook(receiver, "moved", ["E"])], delivery=FAST))
    note = notification("E", {})
    produce(settings, NOTIFICATIONS, [note])
    (dead,) = TopicReader(settings, DELIVERY_DLQ).until(lambda s: len(s) == 1)
    assert (dead["id"], dead["attempt"]) == (note["id"], 1)  # no retry tier
    assert dead["last_error"] == f"redirect 302 to {receiver.url('/elsewhere')} not followed"
    (attempt,) = TopicReader(settings, DELIVERIES).until(lambda s: len(s) == 1)
    assert (attempt["outcome"], attempt["status_code"]) == ("DLQ", 302)
    assert moved.calls == 1 and receiver.routes["/elsewhere"].calls == 0



def test_delivery_reports_its_lag_as_every_consumer_does(settings, tmp_path):
    """consumer_lag{consumer="delivery", topic, partition}, as the processors and the sink: once
    delivery has read the notification, its partition shows 0 records left."""
    from prometheus_client import REGISTRY

    produce(settings, NOTIFICATIONS, [notification("CUSTOMER_ACCUMULATION", {"points": 1})])
    opts = Options(state_dir=tmp_path / "state", group_id=f"{settings.topic_prefix}lag", lag_interval_s=0.1)
    service = DeliveryService(settings, lambda: Program(), opts).start()

    def lags() -> list[float]:
        return [s.value for family in REGISTRY.collect() if family.name == "consumer_lag"
                for s in family.samples
                if s.labels["consumer"] == "delivery" and s.labels["topic"] == NOTIFICATIONS]  # fmt: skip

    try:
        wait_for(lambda: lags() and max(lags()) == 0, timeout=30, what="delivery's lag on notifications at 0")
    finally:
        service.stop()
