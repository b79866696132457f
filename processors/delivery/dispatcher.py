"""Per-endpoint lanes (queue + bounded workers) so a slow or failing endpoint never delays the
others, and per-destination batchers (flush on batch size or linger)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from processors.delivery import metrics
from processors.delivery.routing import Endpoint, batch_notification
from processors.delivery.sender import Deliverer

log = logging.getLogger(__name__)
Done = Callable[[], None]


class Lane:
    """One endpoint's queue and its `concurrency` workers.

    A lane that cannot keep up (queue at `max_queue` and its oldest entry waiting longer than
    `max_wait_s`) moves new messages to the first retry tier instead of growing without bound;
    a busy but healthy lane just queues (the service's in-flight limit applies backpressure).
    """

    def __init__(
        self, key: str, deliverer: Deliverer, concurrency: int, max_queue: int, max_wait_s: float
    ) -> None:
        self.key = key
        self.deliverer = deliverer
        self.max_queue = max_queue
        self.max_wait_s = max_wait_s
        self.queue: asyncio.Queue[tuple[dict[str, Any], Done]] = asyncio.Queue()
        self.enqueued: deque[float] = deque()  # enqueue times, aligned with the queue
        self.busy = 0
        self.workers = [asyncio.create_task(self._work()) for _ in range(concurrency)]

    def stuck(self) -> bool:
        full = self.queue.qsize() >= self.max_queue
        return full and time.monotonic() - self.enqueued[0] > self.max_wait_s

    def submit(self, note: dict[str, Any], done: Done) -> None:
        if self.stuck():
            asyncio.create_task(self._defer(note, done))
            return
        self.enqueued.append(time.monotonic())
        self.queue.put_nowait((note, done))
        metrics.QUEUED.labels(self.key.split(":", 1)[1]).set(self.queue.qsize())

    def idle(self) -> bool:
        return self.queue.empty() and self.busy == 0

    async def _defer(self, note: dict[str, Any], done: Done) -> None:
        try:
            await self.deliverer.defer(self.key, note)
            done()
        except Exception:  # not acked: redelivered after restart
            log.exception("defer failed", extra={"endpoint": self.key})

    async def _work(self) -> None:
        while True:
            note, done = await self.queue.get()
            self.enqueued.popleft()
            self.busy += 1
            metrics.QUEUED.labels(self.key.split(":", 1)[1]).set(self.queue.qsize())
            try:
                await self.deliverer.deliver(self.key, note)
                done()
            except asyncio.CancelledError:
                raise
            except Exception:  # not acked: the offset stays uncommitted
                log.exception("delivery failed", extra={"endpoint": self.key, "id": note["id"]})
            finally:
                self.busy -= 1

    def cancel(self) -> None:
        for w in self.workers:
            w.cancel()


class Batch:
    """Items waiting for one destination."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.done: list[Done] = []
        self.timer: asyncio.TimerHandle | None = None


class Dispatcher:
    def __init__(
        self,
        deliverer: Deliverer,
        concurrency: Callable[[], int],
        max_queue: int = 1000,
        max_wait_s: float = 5.0,
    ) -> None:
        self.deliverer = deliverer
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.max_wait_s = max_wait_s
        self.lanes: dict[str, Lane] = {}
        self.batches: dict[str, Batch] = {}
        self.endpoints: dict[str, Endpoint] = {}

    def submit(self, key: str, note: dict[str, Any], done: Done) -> None:
        """Queue a fanned-out notification (or batch) for endpoint `key`."""
        lane = self.lanes.get(key)
        if lane is None:
            lane = Lane(key, self.deliverer, self.concurrency(), self.max_queue, self.max_wait_s)
            self.lanes[key] = lane
        lane.submit(note, done)

    def add_item(self, ep: Endpoint, item: dict[str, Any], done: Done) -> None:
        """Add an item to a destination's batch; flush at batch_size, else after linger_ms."""
        batch = self.batches.setdefault(ep.key, Batch())
        self.endpoints[ep.key] = ep
        batch.items.append(item)
        batch.done.append(done)
        if len(batch.items) >= ep.batch_size:
            self.flush(ep.key)
        elif batch.timer is None:
            loop = asyncio.get_running_loop()
            batch.timer = loop.call_later(ep.linger_ms / 1000, self.flush, ep.key)

    def flush(self, key: str) -> None:
        batch = self.batches.pop(key, None)
        if not batch or not batch.items:
            return
        if batch.timer:
            batch.timer.cancel()
        note = batch_notification(self.endpoints[key], batch.items, int(time.time() * 1000))
        dones = batch.done
        self.submit(key, note, lambda: [d() for d in dones])

    def flush_all(self) -> None:
        for key in list(self.batches):
            self.flush(key)

    def idle(self) -> bool:
        return not self.batches and all(lane.idle() for lane in self.lanes.values())

    async def drain(self, timeout: float) -> bool:
        """Send what is batched and wait (bounded) for the lanes to empty."""
        self.flush_all()
        deadline = time.monotonic() + timeout
        while not self.idle() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.idle()

    def close(self) -> None:
        for lane in self.lanes.values():
            lane.cancel()
        for batch in self.batches.values():
            if batch.timer:
                batch.timer.cancel()
