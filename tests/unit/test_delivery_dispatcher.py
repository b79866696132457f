"""Per-endpoint lanes and destination batching, with a fake deliverer (no HTTP, no Kafka).

Timeouts (a lane's max_block_s, a batch's linger) run on a ManualClock the test advances: a
check of "not yet" and "now" needs no real sleep, so a loaded machine cannot change the result."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from processors.delivery.dispatcher import Dispatcher
from processors.delivery.routing import Endpoint
from processors.runtime.clock import ManualClock


class FakeDeliverer:
    """`slow` endpoints block until released; everything else is delivered at once."""

    def __init__(self, slow: set[str] = frozenset()) -> None:
        self.slow = slow
        self.release = asyncio.Event()
        self.delivered: list[tuple[str, dict[str, Any]]] = []
        self.deferred: list[tuple[str, str | None]] = []

    async def deliver(self, key: str, note: dict[str, Any]) -> str:
        if key in self.slow:
            await self.release.wait()
        self.delivered.append((key, note))
        return "DELIVERED"

    async def defer(self, key: str, note: dict[str, Any], came_from: str | None = None) -> None:
        self.deferred.append((note["id"], came_from))


def _note(i: int) -> dict[str, Any]:
    return {"id": f"n{i}", "event": "E", "customer_id": "c", "data": "{}"}


async def _until(cond, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.001)


def test_a_full_lane_applies_backpressure_and_wakes_at_low_water() -> None:
    async def go() -> None:
        fake = FakeDeliverer(slow={"webhook:slow"})
        clock = ManualClock(0)
        d = Dispatcher(fake, lambda: 2, max_queue=4, max_block_s=60, timers=clock)
        acked: list[str] = []
        for i in range(6):  # 2 in flight + 4 queued: full
            d.submit("webhook:slow", _note(i), lambda i=i: acked.append(f"slow{i}"))
            d.submit("webhook:fast", _note(i), lambda i=i: acked.append(f"fast{i}"))
        await _until(lambda: len(fake.delivered) == 6)
        assert [k for k, _ in fake.delivered] == ["webhook:fast"] * 6  # the slow one holds no one
        assert d.blocked("webhook:slow") and not d.blocked("webhook:fast")
        woken: list[int] = []
        d.wait("webhook:slow", lambda: woken.append(d.lanes["webhook:slow"].queue.qsize()))
        clock.advance(59_999)  # full for just under the bound
        await asyncio.sleep(0)  # let anything woken run
        assert woken == [] and fake.deferred == []  # full is a wait, never a move to a tier
        fake.release.set()
        await _until(lambda: woken)
        assert woken == [2]  # at low water (half of max_queue), not only once empty
        assert not d.blocked("webhook:slow")
        assert await d.drain(2.0)
        assert sorted(a for a in acked if a.startswith("slow")) == [f"slow{i}" for i in range(6)]
        assert fake.deferred == []
        d.close()

    asyncio.run(go())


def test_a_lane_full_longer_than_the_bound_sheds_its_overflow_until_low_water() -> None:
    async def go() -> None:
        fake = FakeDeliverer(slow={"webhook:dead"})
        clock = ManualClock(0)
        d = Dispatcher(fake, lambda: 1, max_queue=2, max_block_s=5, timers=clock)
        acked: list[str] = []
        for i in range(3):  # 1 in flight + 2 queued: full
            d.submit("webhook:dead", _note(i), lambda i=i: acked.append(f"n{i}"))
        await _until(lambda: d.blocked("webhook:dead"))
        woken: list[bool] = []
        d.wait("webhook:dead", lambda: woken.append(True))
        clock.advance(4_999)
        assert woken == [] and d.blocked("webhook:dead")  # not before the bound
        clock.advance(1)
        assert woken == [True]  # the bound: the waiting record is taken again ...
        assert not d.blocked("webhook:dead")  # ... and what finds the lane full is moved
        d.submit("webhook:dead", _note(7), lambda: acked.append("n7"), came_from="5s")
        await _until(lambda: "n7" in acked)
        assert fake.deferred == [("n7", "5s")]  # moved on from the tier it came from
        fake.release.set()
        assert await d.drain(2.0)
        d.submit("webhook:dead", _note(8), lambda: acked.append("n8"))
        await _until(lambda: "n8" in acked)
        assert fake.deferred == [("n7", "5s")]  # below low water: queued again, not moved
        d.close()

    asyncio.run(go())


def test_destination_batches_flush_on_size_and_linger() -> None:
    async def go() -> None:
        fake = FakeDeliverer()
        clock = ManualClock(0)
        d = Dispatcher(fake, lambda: 1, timers=clock)
        ep = Endpoint("destination", "crm", "https://x", (), frozenset(), batch_size=2, linger_ms=50)
        acked: list[int] = []
        for i in range(3):
            d.add_item(ep, {"id": f"e{i}", "customer_id": "c"}, lambda i=i: acked.append(i))
        await _until(lambda: len(acked) == 2)
        assert len(fake.delivered) == 1 and sorted(acked) == [0, 1]  # full batch at once
        clock.advance(49)
        await asyncio.sleep(0)
        assert sorted(acked) == [0, 1] and len(fake.delivered) == 1  # the third lingers ...
        clock.advance(1)
        await _until(lambda: len(acked) == 3)  # ... and goes after linger_ms
        assert len(fake.delivered) == 2 and sorted(acked) == [0, 1, 2]
        batches = [json.loads(n["data"])["events"] for _, n in fake.delivered]
        assert [[e["id"] for e in b] for b in batches] == [["e0", "e1"], ["e2"]]
        d.close()

    asyncio.run(go())
