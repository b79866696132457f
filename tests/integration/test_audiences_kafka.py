"""The audiences processor on real Kafka: ENTER on a profile change, LEAVE by time alone."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from plumbing.config_table import publish_program
from processors.audiences.processor import build
from processors.runtime.clock import ManualClock
from processors.runtime.runner import Runner, RuntimeOptions
from schemas.codec import decode, encode
from schemas.program import Audience, Program
from schemas.settings import Settings
from schemas.topics import AUDIENCES_MEMBERSHIP, PROFILES_CHANGES, topic_name

pytestmark = pytest.mark.integration

DAY = 24 * 3600 * 1000


def membership_reader(settings: Settings) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    topic = topic_name(AUDIENCES_MEMBERSHIP, settings)
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    return consumer


def test_enter_on_profile_change_and_leave_by_time(settings: Settings, tmp_path: Path) -> None:
    audience = Audience(id="active", condition="profile.days_since_last_event < 7")
    publish_program(settings, Program(audiences=[audience]))
    now = int(time.time() * 1000)
    clock = ManualClock(now)
    runner = Runner(build(), settings, RuntimeOptions(state_dir=tmp_path, clock=clock)).start()
    reader = membership_reader(settings)
    seen: list[tuple[str, str, str]] = []

    def wait_for(expected: tuple[str, str, str]) -> None:
        deadline = time.monotonic() + 60
        while expected not in seen:
            assert runner.error is None, runner.error
            assert time.monotonic() < deadline, f"no {expected}; seen {seen}"
            for msg in reader.consume(100, 0.2):
                if not msg.error():
                    v = decode(msg.value(), "Membership")
                    seen.append((v["customer_id"], v["audience_id"], v["action"]))

    try:
        flat = {"customer_id": "c1", "identified": True, "last_event_at": now - DAY}
        value = {"customer_id": "c1", "updated_at": now, "profile": json.dumps(flat)}
        producer = Producer(
            {"bootstrap.servers": settings.kafka_bootstrap_servers, "partitioner": "murmur2_random"}
        )
        producer.produce(topic_name(PROFILES_CHANGES, settings), encode("Profile", value), b"c1")
        assert producer.flush(30) == 0
        wait_for(("c1", "active", "ENTER"))
        clock.advance(6 * DAY)  # 7 days since the last event: no new profile needed
        wait_for(("c1", "active", "LEAVE"))
        assert seen == [("c1", "active", "ENTER"), ("c1", "active", "LEAVE")]
    finally:
        reader.close()
        runner.stop()
