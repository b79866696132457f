"""The disabled-endpoint table (after a 410) is shared through the compacted topic
delivery.disabled, keyed by a hash: other and restarted instances skip the endpoint, and no
file or record holds the webhook secret."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from processors.delivery.disabled import DisabledTable
from processors.delivery.kafka_io import partitions
from processors.delivery.loop import DeliveryService, Options
from processors.delivery.routing import Endpoint
from processors.delivery.testing import TopicReader, notification, produce
from processors.runtime.testing import wait_for
from schemas.program import Delivery, Program, Webhook
from schemas.settings import Settings
from schemas.topics import DELIVERIES, DELIVERY_DISABLED, NOTIFICATIONS, topic_name

pytestmark = pytest.mark.integration
RAW = b"disabled-table-secret-0123456789"
SECRET = "whsec_" + base64.b64encode(RAW).decode()


def _records(settings: Settings, count: int) -> list[bytes]:
    """Keys and values of the table topic, raw, once `count` records are there."""
    reader = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": uuid.uuid4().hex})
    topic = topic_name(DELIVERY_DISABLED, settings)
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions(reader, topic)])
    seen: list[bytes] = []
    try:
        wait_for(lambda: seen.extend(_raw(reader)) or len(seen) >= 2 * count, timeout=10)
    finally:
        reader.close()
    return seen


def _raw(reader: Consumer) -> list[bytes]:
    return [p for m in reader.consume(100, 0.2) if not m.error() for p in (m.key(), m.value())]


def _leaks(blob: bytes, url: str) -> bool:
    return any(s in blob for s in (SECRET.encode(), RAW, url.encode()))


def test_410_on_one_instance_is_skipped_by_a_restart_with_a_fresh_state_dir(
    settings, receiver, tmp_path
):
    gone = receiver.routes["/gone"]
    gone.always = 410
    url = receiver.url("/gone")
    program = Program(
        webhooks=[Webhook(id="gone", url=url, events=["E"], secret=SECRET)],
        delivery=Delivery(retry_tiers=["200ms"], timeout_s=2),
    )
    legacy = tmp_path / "a" / "disabled-endpoints.json"  # what older versions wrote
    legacy.parent.mkdir()
    legacy.write_text(f'{{"webhook:gone": {{"fingerprint": "{url}|{SECRET}"}}}}')
    attempts = TopicReader(settings, DELIVERIES)

    def run(state: Path) -> DeliveryService:
        return DeliveryService(settings, lambda: program, Options(state_dir=state, group_id="d")).start()

    first = run(tmp_path / "a")
    produce(settings, NOTIFICATIONS, [notification("E", {"n": 1})])
    attempts.until(lambda s: len(s) == 1)
    first.stop()
    second = run(tmp_path / "b")  # another machine: nothing local
    try:
        produce(settings, NOTIFICATIONS, [notification("E", {"n": 2})])
        seen = attempts.until(lambda s: len(s) == 2)
    finally:
        second.stop()
    assert [(a["outcome"], a["status_code"]) for a in seen] == [("DISABLED", 410), ("DISABLED", None)]
    assert gone.calls == 1
    assert not legacy.exists()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(_leaks(p.read_bytes(), url) for p in files)
    assert not any(_leaks(blob, url) for blob in _records(settings, 1))


def test_every_instance_reads_the_table_at_start_and_follows_it(settings):
    ep = Endpoint("webhook", "w", "https://hooks.example.com/x", (SECRET,), frozenset({"E"}))
    moved = Endpoint("webhook", "w", "https://hooks.example.com/y", (SECRET,), frozenset({"E"}))
    one, other = DisabledTable(settings).start(), DisabledTable(settings).start()
    try:
        one.disable(ep, "410 Gone")
        wait_for(lambda: other.is_disabled(ep), timeout=10, what="the other instance follows")
        late = DisabledTable(settings).start()
        assert late.is_disabled(ep)  # read at start, before any delivery
        assert not late.is_disabled(moved)  # a new url is tried again
        late.stop()
    finally:
        one.stop()
        other.stop()
