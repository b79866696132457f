"""The ?wait=true result consumer starts with the first request that waits, not with the worker:
tailing every instance's loyalty.results costs a worker CPU per result that a worker never
asked to wait should not pay."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from ingest.app import create_app
from ingest.config import IngestConfig
from ingest.programs import StaticPrograms
from ingest.replies import OnDemand, ReplyHub
from plumbing.producer import Unavailable
from schemas.settings import Settings
from tests.support.ingest_fakes import PROGRAM, FakeLookup, FakeProducer


class FakeTail:
    def __init__(self, log: list[str], fail: bool = False, hub: ReplyHub | None = None) -> None:
        self.log, self.fail = log, fail
        self.hub = hub or ReplyHub()
        self.stopped = False

    def start(self) -> FakeTail:
        self.log.append("start")
        if self.fail:
            raise RuntimeError("broker down")
        return self

    def close(self) -> None:
        self.log.append("close")


def test_a_worker_serves_without_reading_results_until_a_request_waits() -> None:
    programs = StaticPrograms(PROGRAM)
    app = create_app(
        Settings(kafka_bootstrap_servers="127.0.0.1:1", topic_prefix="test."),  # no broker to tail
        IngestConfig(api_keys={"k": frozenset({"ingest"})}),
        programs=programs, producer=FakeProducer(), lookup=FakeLookup(), publisher=programs.publish,
        history=programs, audit=programs, listen_for_results=True,
    )  # fmt: skip
    with TestClient(app) as client:
        body = {"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": 10}}
        assert client.post("/behavior/events", json=body, headers={"X-API-Key": "k"}).status_code == 202
        assert app.state.ingest.results.tail is None  # no consumer was started


def test_concurrent_first_waits_start_one_tail() -> None:
    log: list[str] = []
    on_demand = OnDemand(lambda: FakeTail(log))

    async def go() -> None:
        await asyncio.gather(*(on_demand.started("the results") for _ in range(5)))
        await on_demand.started("the results")

    asyncio.run(go())
    assert log == ["start"] and on_demand.tail is not None
    on_demand.close()
    assert log == ["start", "close"] and on_demand.tail is None


def test_a_tail_that_cannot_start_is_unavailable_and_tried_again() -> None:
    log: list[str] = []
    fail = [True]
    on_demand = OnDemand(lambda: FakeTail(log, fail[0]))
    with pytest.raises(Unavailable, match="cannot read the results: broker down"):
        asyncio.run(on_demand.started("the results"))
    assert log == ["start", "close"] and on_demand.tail is None
    fail[0] = False
    asyncio.run(on_demand.started("the results"))
    assert log == ["start", "close", "start"] and on_demand.tail is not None


def test_an_idle_tail_stops_and_the_next_wait_starts_a_new_one() -> None:
    """A worker that served one ?wait=true does not tail every result for the rest of its
    life: once no request has needed the tail for idle_stop_s and none waits, it stops."""
    log: list[str] = []
    now = [1000.0]
    hub = ReplyHub()
    on_demand = OnDemand(lambda: FakeTail(log, hub=hub), idle_stop_s=300, clock=lambda: now[0])

    async def go() -> None:
        await on_demand.started("the results")
        first = on_demand.tail
        now[0] += 299
        assert first is not None and first.idle() is False  # needed 299 s ago: keeps reading
        await on_demand.started("the results")  # a use keeps it for another 300 s
        now[0] += 299
        assert first.idle() is False and log == ["start"]
        future = hub.register("e1")
        now[0] += 301
        assert first.idle() is False  # a request still waits on it
        hub.forget("e1", future)
        assert first.idle() is True and first.stopped  # idle and no one waits: it stops
        await on_demand.started("the results")  # the next wait starts a new tail
        assert log == ["start", "close", "start"] and on_demand.tail is not first
        assert on_demand.tail.idle() is False

    asyncio.run(go())
