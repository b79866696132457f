"""Per-endpoint lanes (queue + bounded workers) so a slow or failing endpoint never delays the
others, and per-destination batchers (flush on batch size or linger)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from processors.delivery import metrics
from processors.delivery.routing import Endpoint, batch_notification
from processors.delivery.sender import Deliverer

log = logging.getLogger(__name__)
Done = Callable[[], None]


class Timers(Protocol):
    """Where lanes and batches schedule their timeouts: the running event loop in production, a
    ManualClock (processors/runtime/clock.py) in tests, so a timeout needs no real sleep."""

    def call_later(self, delay: float, callback: Callable[[], None], /) -> Any: ...


class Lane:
    """One endpoint's queue and its `concurrency` workers.

    The queue is bounded by backpressure: at `max_queue` the lane is full and the service
    stops taking records that target it (`wait`); it is woken when the workers have brought
    the queue down to `low_water` (half of `max_queue`). Nothing is moved to a retry tier
    because the queue is full, unless the lane stays full for `max_block_s`: it then sheds
    (a dead endpoint must not hold the partitions it shares with every other endpoint for
    ever): waiting records are woken, and what finds the lane full is moved to a retry tier
    instead of queued, until the queue is down to `low_water` again.
    """

    def __init__(
        self,
        key: str,
        deliverer: Deliverer,
        concurrency: int,
        max_queue: int,
        max_block_s: float,
        timers: Timers | None = None,
    ) -> None:
        self.key = key
        self.timers = timers or asyncio.get_running_loop()
        self.deliverer = deliverer
        self.max_queue = max_queue
        self.low_water = max_queue // 2
        self.max_block_s = max_block_s
        self.queue: asyncio.Queue[tuple[dict[str, Any], Done]] = asyncio.Queue()
        self.busy = 0
        self.shedding = False
        self.waiters: list[Callable[[], None]] = []
        self.timer: Any = None  # the max_block_s bound of this episode (a timer handle)
        self.depth = metrics.queued(key.split(":", 1)[1])  # delivery_queue_depth{endpoint}
        self.workers = [asyncio.create_task(self._work()) for _ in range(concurrency)]

    def full(self) -> bool:
        return self.queue.qsize() >= self.max_queue

    def blocked(self) -> bool:
        """Full and not shedding: a record for this endpoint has to wait."""
        return self.full() and not self.shedding

    def wait(self, wake: Callable[[], None]) -> None:
        """Call `wake` once the queue is down to low water, or when the bound is reached."""
        self.waiters.append(wake)
        if self.timer is None:
            self.timer = self.timers.call_later(self.max_block_s, self._shed)

    def submit(self, note: dict[str, Any], done: Done, came_from: str | None = None) -> None:
        if self.shedding and self.full():
            metrics.SHED.labels(self.key.split(":", 1)[1]).inc()
            asyncio.create_task(self._defer(note, done, came_from))
            return
        self.queue.put_nowait((note, done))
        self.depth.set(self.queue.qsize())

    def idle(self) -> bool:
        return self.queue.empty() and self.busy == 0

    def _shed(self) -> None:
        self.timer = None
        self.shedding = True
        log.warning("endpoint backlog full too long; moving its overflow to retry tiers",
                    extra={"endpoint": self.key, "max_block_s": self.max_block_s})  # fmt: skip
        self._wake()

    def _wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for wake in waiters:
            wake()

    def _drained(self) -> None:
        """Down to low water: the episode is over; waiting records are taken again."""
        if self.queue.qsize() > self.low_water:
            return
        if self.timer:
            self.timer.cancel()
            self.timer = None
        self.shedding = False
        if self.waiters:
            self._wake()

    async def _defer(self, note: dict[str, Any], done: Done, came_from: str | None) -> None:
        try:
            await self.deliverer.defer(self.key, note, came_from)
            done()
        except Exception:  # not acked: redelivered after restart
            log.exception("defer failed", extra={"endpoint": self.key})

    async def _work(self) -> None:
        while True:
            note, done = await self.queue.get()
            self.busy += 1
            self.depth.set(self.queue.qsize())
            self._drained()
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
        if self.timer:
            self.timer.cancel()


class Batch:
    """Items waiting for one destination."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.done: list[Done] = []
        self.timer: Any = None


class Dispatcher:
    def __init__(
        self,
        deliverer: Deliverer,
        concurrency: Callable[[], int],
        max_queue: int = 1000,
        max_block_s: float = 10.0,
        timers: Timers | None = None,
    ) -> None:
        self.deliverer = deliverer
        self.timers = timers  # None: the running event loop
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.max_block_s = max_block_s
        self.lanes: dict[str, Lane] = {}
        self.batches: dict[str, Batch] = {}
        self.endpoints: dict[str, Endpoint] = {}

    def blocked(self, key: str) -> bool:
        """Whether a record for endpoint `key` has to wait (its queue is full): see Lane."""
        lane = self.lanes.get(key)
        return lane is not None and lane.blocked()

    def wait(self, key: str, wake: Callable[[], None]) -> None:
        """Call `wake` when endpoint `key` takes records again."""
        self.lanes[key].wait(wake)

    def submit(self, key: str, note: dict[str, Any], done: Done, came_from: str | None = None) -> None:
        """Queue a fanned-out notification (or batch) for endpoint `key`; `came_from` is the
        retry tier it was read from (where a shedding lane moves it on from)."""
        lane = self.lanes.get(key)
        if lane is None:
            lane = Lane(key, self.deliverer, self.concurrency(), self.max_queue, self.max_block_s,
                        self.timers)  # fmt: skip
            self.lanes[key] = lane
        lane.submit(note, done, came_from)

    def add_item(self, ep: Endpoint, item: dict[str, Any], done: Done) -> None:
        """Add an item to a destination's batch; flush at batch_size, else after linger_ms."""
        batch = self.batches.setdefault(ep.key, Batch())
        self.endpoints[ep.key] = ep
        batch.items.append(item)
        batch.done.append(done)
        if len(batch.items) >= ep.batch_size:
            self.flush(ep.key)
        elif batch.timer is None:
            timers = self.timers or asyncio.get_running_loop()
            batch.timer = timers.call_later(ep.linger_ms / 1000, lambda: self.flush(ep.key))

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
