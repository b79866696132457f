"""Ingest's Kafka producer: batched by INGEST_LINGER_MS, and polled by the worker's loop every
half linger while sends are in flight, not every millisecond (each poll is a loop wake-up)."""

from __future__ import annotations

import asyncio

import pytest

from ingest.app import ingest_producer
from ingest.config import IngestConfig
from schemas.settings import Settings


class CountingPolls:
    """The librdkafka producer, counting the polls made on it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.polls = 0

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return self.inner.poll(timeout)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)


def test_the_loop_polls_every_half_linger_while_a_send_is_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_LINGER_MS", "40")
    config = IngestConfig.from_env()
    assert config.linger_ms == 40 and config.poll_tick_s == 0.02
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", topic_prefix="u.")  # never acks
    producer = ingest_producer(settings, config).start()
    assert producer.linger_ms == 40
    counting = producer._producer = CountingPolls(producer._producer)

    delivered: list = []

    async def in_flight_for(seconds: float) -> None:
        assert producer.produce_nowait("events.loyalty", "c1", b"v", callback=lambda *a: delivered.append(a))
        await asyncio.sleep(seconds)

    try:
        asyncio.run(in_flight_for(0.4))
        # still in flight the whole time (the queue's length also counts librdkafka's error
        # events about the unreachable broker until a poll serves them: not == 1)
        assert delivered == [] and len(counting) >= 1
        # every 20 ms: at most 0.4 / 0.02 polls (a 1 ms tick polled about 400 times)
        assert 1 <= counting.polls <= 22
    finally:
        producer.close(0)


def test_a_short_linger_still_polls_at_most_every_millisecond() -> None:
    assert IngestConfig(linger_ms=0).poll_tick_s == 0.001
    assert IngestConfig(linger_ms=2).poll_tick_s == 0.001
    assert IngestConfig().linger_ms == 5 and IngestConfig().poll_tick_s == 0.0025
