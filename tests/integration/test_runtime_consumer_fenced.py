"""A fatal consumer error stops the processor instead of leaving it idle and "healthy".

librdkafka delivers a fatal consumer error (here FENCED_INSTANCE_ID: another member joined with
the same group.instance.id, as a static member's own rejoin did after a broker restart in the
broker-restart stack test) as an error message with code _FATAL whose fatal() is False;
consume() then returns nothing for ever. The runner must end with ConsumerFailed, so that its
supervisor starts a fresh one."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Consumer

from plumbing.kafka_util import ConsumerFailed
from plumbing.topic_admin import ensure_topics
from processors.runtime.example import INPUT, TOPICS, build
from processors.runtime.runner import Runner, RuntimeOptions
from processors.runtime.testing import wait_for
from schemas.settings import Settings
from schemas.topics import topic_name

pytestmark = pytest.mark.integration


def test_a_fenced_static_member_stops_with_a_fatal_error(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings, TOPICS)
    options = RuntimeOptions(state_dir=tmp_path, instance_id="twin", static_membership=True)
    runner = Runner(build(), settings, options).start()
    twin = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": runner.group,
                     "group.instance.id": f"{runner.group}-twin", "session.timeout.ms": 6000})  # fmt: skip
    try:
        wait_for(runner.ready.is_set, timeout=60, what="the runner assigned")
        twin.subscribe([topic_name(INPUT, settings)])

        def twin_joined() -> bool:
            twin.consume(10, 0.2)  # serves the twin's join
            return bool(twin.assignment()) or runner.error is not None

        wait_for(twin_joined, timeout=60, what="the twin takes the instance id")
        wait_for(lambda: runner.error is not None, timeout=60, what="the runner to stop")
        assert isinstance(runner.error, ConsumerFailed), runner.error
        assert "FENCED_INSTANCE_ID" in str(runner.error) or "fenced" in str(runner.error)
    finally:
        runner.stop()
        twin.close()
