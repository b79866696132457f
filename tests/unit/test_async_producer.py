"""plumbing.producer without a broker: a deadline turns into Unavailable, never a hang."""

from __future__ import annotations

import asyncio
import time

import pytest

from plumbing.producer import AsyncProducer, Unavailable
from schemas.settings import Settings


@pytest.mark.parametrize("poll_on_loop", [False, True], ids=["poll thread", "polled on the loop"])
def test_an_unreachable_broker_gives_unavailable_within_the_ack_timeout(poll_on_loop: bool) -> None:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", topic_prefix="u.")
    producer = AsyncProducer(settings, ack_timeout_s=0.5, poll_on_loop=poll_on_loop).start()

    async def go() -> list:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await producer.send("events.loyalty", "c1", b"v")
        many = await producer.send_many([("events.loyalty", "c1", b"a"), ("events.loyalty", b"c2", b"b")])
        assert time.monotonic() - started < 10  # 2 x (0.5 s + the 1 s timer slack), not for ever
        return many

    try:
        outcomes = asyncio.run(go())
        assert [type(o) for o in outcomes] == [Unavailable, Unavailable]
    finally:
        producer.close(0)
