"""Per-endpoint lanes and destination batching, with a fake deliverer (no HTTP, no Kafka)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from processors.delivery.dispatcher import Dispatcher
from processors.delivery.routing import Endpoint


class FakeDeliverer:
    """`slow` endpoints block until released; everything else is delivered at once."""

    def __init__(self, slow: set[str] = frozenset()) -> None:
        self.slow = slow
        self.release = asyncio.Event()
        self.delivered: list[tuple[str, dict[str, Any]]] = []
        self.deferred: list[str] = []

    async def deliver(self, key: str, note: dict[str, Any]) -> str:
        if key in self.slow:
            await self.release.wait()
        self.delivered.append((key, note))
        return "DELIVERED"

    async def defer(self, key: str, note: dict[str, Any]) -> None:
        self.deferred.append(note["id"])


def _note(i: int) -> dict[str, Any]:
    return {"id": f"n{i}", "event": "E", "customer_id": "c", "data": "{}"}


async def _until(cond, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.001)


def test_a_blocked_endpoint_does_not_hold_up_another() -> None:
    async def go() -> None:
        fake = FakeDeliverer(slow={"webhook:slow"})
        d = Dispatcher(fake, lambda: 2, max_queue=3, max_wait_s=0.05)
        acked: list[str] = []
        for i in range(5):
            d.submit("webhook:slow", _note(i), lambda i=i: acked.append(f"slow{i}"))
            d.submit("webhook:fast", _note(i), lambda i=i: acked.append(f"fast{i}"))
        await _until(lambda: len(fake.delivered) == 5)
        assert [k for k, _ in fake.delivered] == ["webhook:fast"] * 5
        assert fake.deferred == []  # 2 in flight + 3 queued: full, but not waiting long yet
        await asyncio.sleep(0.06)
        d.submit("webhook:slow", _note(9), lambda: acked.append("slow9"))
        await _until(lambda: fake.deferred)
        assert fake.deferred == ["n9"] and "slow9" in acked  # backlog full: moved to a tier
        fake.release.set()
        assert await d.drain(1.0)
        assert sorted(a for a in acked if a.startswith("slow")) == [f"slow{i}" for i in (0, 1, 2, 3, 4, 9)]
        d.close()

    asyncio.run(go())


def test_destination_batches_flush_on_size_and_linger() -> None:
    async def go() -> None:
        fake = FakeDeliverer()
        d = Dispatcher(fake, lambda: 1)
        ep = Endpoint("destination", "crm", "https://x", (), frozenset(), batch_size=2, linger_ms=50)
        acked: list[int] = []
        for i in range(3):
            d.add_item(ep, {"id": f"e{i}", "customer_id": "c"}, lambda i=i: acked.append(i))
        await _until(lambda: len(acked) == 2)
        assert len(fake.delivered) == 1 and sorted(acked) == [0, 1]  # full batch at once
        await _until(lambda: len(acked) == 3)  # the third goes after linger_ms
        assert len(fake.delivered) == 2 and sorted(acked) == [0, 1, 2]
        batches = [json.loads(n["data"])["events"] for _, n in fake.delivered]
        assert [[e["id"] for e in b] for b in batches] == [["e0", "e1"], ["e2"]]
        d.close()

    asyncio.run(go())
