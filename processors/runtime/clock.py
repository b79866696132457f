"""Injectable clocks: wall time in production, a hand-moved clock in tests.

A ManualClock also schedules: `call_later` has the shape of asyncio's loop.call_later, so code
that takes its timers from an injectable scheduler (delivery's Dispatcher) runs its timeouts
when a test advances the clock, not after a real sleep."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)


class Timer:
    """A ManualClock callback; `cancel()` like asyncio.TimerHandle."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that only moves when told to; safe to move from another thread (timers then run
    on the thread that calls `advance`)."""

    def __init__(self, now_ms: int | None = None) -> None:
        self._now = now_ms if now_ms is not None else int(time.time() * 1000)
        self._lock = threading.Lock()
        self._timers: list[tuple[int, int, Timer]] = []  # (due ms, order, timer): a heap
        self._order = itertools.count()

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` once the clock has been advanced `delay_s` past now."""
        timer = Timer(callback)
        with self._lock:
            heapq.heappush(self._timers, (self._now + int(delay_s * 1000), next(self._order), timer))
        return timer

    def advance(self, ms: int | float) -> int:
        """Move on by `ms` and run the timers that fell due, in due order."""
        with self._lock:
            self._now += int(ms)
            now = self._now
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > now:
                    return now
                timer = heapq.heappop(self._timers)[2]
            if not timer.cancelled:
                timer.callback()

    def set(self, now_ms: int) -> None:
        with self._lock:
            self._now = now_ms
