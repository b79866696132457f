"""A processor whose consumer the group never assigns stops instead of idling "healthy".

In the broker-restart counter test a broker SIGKILL landed while the processor's consumer was
joining its group: librdkafka never joined again (no error, no assignment, the group empty)
and the processor served /healthz 200 for minutes with every input unprocessed. Here the join
cannot complete because a peer in the group stops polling (the coordinator waits for it to
rejoin): the runner must turn unhealthy and then end with FatalError, for its supervisor to
start a fresh one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from plumbing.topic_admin import ensure_topics
from processors.runtime.example import INPUT, TOPICS, build
from processors.runtime.runner import FatalError, Runner, RuntimeOptions
from processors.runtime.testing import wait_for
from schemas.settings import Settings
from schemas.topics import topic_name

pytestmark = pytest.mark.integration


def test_a_consumer_never_assigned_makes_the_processor_exit(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings, TOPICS)
    runner = Runner(build(), settings, RuntimeOptions(state_dir=tmp_path, instance_id="x", stall_timeout_s=8))
    peer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": runner.group,
                     "partition.assignment.strategy": "range", "session.timeout.ms": 45_000,
                     "max.poll.interval.ms": 300_000})  # fmt: skip
    try:
        peer.subscribe([topic_name(INPUT, settings)])

        def peer_assigned() -> bool:
            peer.consume(10, 0.2)
            return bool(peer.assignment())

        wait_for(peer_assigned, timeout=60, what="the peer owns the partitions")
        # the peer polls no more: the rebalance the runner's join starts waits for it
        runner.start()
        started = time.monotonic()
        wait_for(lambda: not runner.healthy(), timeout=30, what="the unassigned runner unhealthy")
        wait_for(lambda: runner.error is not None, timeout=30, what="the runner to stop")
        assert isinstance(runner.error, FatalError), runner.error
        assert "no partitions assigned" in str(runner.error)
        assert time.monotonic() - started < 30
    finally:
        runner.stop()
        peer.close()
