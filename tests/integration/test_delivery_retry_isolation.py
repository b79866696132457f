"""Retry tiers isolate endpoints: one endpoint's long Retry-After never delays another's retry."""

from __future__ import annotations

import time

import pytest

from processors.delivery.loop import DeliveryService, Options
from processors.delivery.testing import TopicReader, notification, produce
from processors.runtime.testing import wait_for
from schemas.program import Delivery, Program, Webhook
from schemas.settings import Settings
from schemas.topics import DELIVERIES, NOTIFICATIONS, retry_topic

pytestmark = pytest.mark.integration


def test_long_retry_after_does_not_delay_another_endpoints_retry(
    settings, receiver, tmp_path, monkeypatch
):
    monkeypatch.setenv("DELIVERY_MAX_RETRY_AFTER_S", "60")
    capped = Settings.from_env()  # same topic prefix, Retry-After capped at 60 s
    busy = receiver.routes["/a"]
    busy.fail_first, busy.fail_status, busy.retry_after = 10**6, 503, "3600"
    flaky = receiver.routes["/b"]
    flaky.fail_first = 1
    program = Program(
        webhooks=[
            Webhook(id="a", url=receiver.url("/a"), events=["EA"]),
            Webhook(id="b", url=receiver.url("/b"), events=["EB"]),
        ],
        delivery=Delivery(retry_tiers=["1s", "1m"], timeout_s=2),
    )
    service = DeliveryService(capped, lambda: program, Options(state_dir=tmp_path)).start()
    try:
        # Same customer: in the old layout both retries shared one partition of one tier topic.
        produce(settings, NOTIFICATIONS, [notification("EA", {}, customer="c1")])
        TopicReader(settings, DELIVERIES).until(lambda s: any(a["outcome"] == "RETRY" for a in s))
        produce(settings, NOTIFICATIONS, [notification("EB", {}, customer="c1")])
        started = time.monotonic()
        wait_for(lambda: len(flaky.unique) == 1, timeout=15, what="b's retry delivered")
        elapsed = time.monotonic() - started
        assert flaky.calls == 2 and busy.calls == 1  # a's retry still pending
        (held,) = TopicReader(settings, retry_topic("1m")).until(lambda s: len(s) == 1)
        assert held["endpoint_id"] == "a"
        assert held["not_before"] / 1000 - time.time() <= 60  # capped, not 3600 s
    finally:
        service.stop()
    print(f"b's retry delivered {elapsed:.2f} s after its notification")
