"""Per-key token buckets, shared by every worker process of a host.

Each worker used to keep its own buckets, so `--workers 2` let twice the configured rate
through. The supervisor now allocates one table in shared memory (`SharedBuckets`: a slot per
configured key, two doubles each) and a lock, and hands both to every worker; a worker started
alone (tests, the benchmark's in-process app) keeps local buckets. Limits and headers follow the
common X-RateLimit-* convention.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MAX_SHARED_KEYS = 1024  # keys past this many (sorted) keep a bucket per worker
LOCK_TIMEOUT_S = 0.05  # a worker killed inside the few-microsecond critical section must not
# wedge the others: past this wait the request is counted in this worker's own bucket


@dataclass
class Bucket:
    tokens: float
    updated: float = field(default_factory=time.monotonic)


class SharedBuckets:
    """(tokens, updated) per key slot in shared memory; CLOCK_MONOTONIC is host-wide on Linux,
    so `updated` means the same in every worker. updated == 0 marks an unused (full) bucket."""

    def __init__(self, slots: int = MAX_SHARED_KEYS, context: Any = None) -> None:
        context = context or multiprocessing.get_context("spawn")
        self.slots = slots
        self.values = context.RawArray("d", 2 * slots)
        self.lock = context.Lock()


_shared: SharedBuckets | None = None


def use_shared(buckets: SharedBuckets | None) -> None:
    """Called in a worker process before its app is built (ingest/workers.py)."""
    global _shared
    _shared = buckets


def shared() -> SharedBuckets | None:
    return _shared


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the bucket is full again

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }


class RateLimiter:
    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        keys: list[str] | tuple[str, ...] = (),
        buckets: SharedBuckets | None = None,
    ) -> None:
        self.rate = rate_per_s
        self.burst = max(1, burst)
        self._buckets: dict[str, Bucket] = {}
        self._shared = buckets
        # Every worker reads the same INGEST_API_KEYS, so sorted order gives the same slots.
        limit = buckets.slots if buckets else 0
        self._slots = {key: i for i, key in enumerate(sorted(keys)) if i < limit}
        self._warned = False

    def take(self, key: str, cost: float = 1.0) -> Decision:
        if self.rate <= 0:
            return Decision(True, self.burst, self.burst, 0)
        slot = self._slots.get(key)
        if slot is not None and self._shared.lock.acquire(timeout=LOCK_TIMEOUT_S):
            try:  # the clock is read under the lock: updates stay in time order
                tokens, allowed = self._take_shared(slot, time.monotonic(), cost)
            finally:
                self._shared.lock.release()
        else:
            if slot is not None:
                self._lock_timed_out()
            tokens, allowed = self._take_local(key, time.monotonic(), cost)
        reset = math.ceil((self.burst - tokens) / self.rate)
        return Decision(allowed, self.burst, int(tokens), reset)

    def _take_shared(self, slot: int, now: float, cost: float) -> tuple[float, bool]:
        values = self._shared.values
        tokens, updated = values[2 * slot], values[2 * slot + 1]
        tokens = self.burst if updated == 0.0 else min(self.burst, tokens + (now - updated) * self.rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        values[2 * slot], values[2 * slot + 1] = tokens, now
        return tokens, allowed

    def _take_local(self, key: str, now: float, cost: float) -> tuple[float, bool]:
        bucket = self._buckets.setdefault(key, Bucket(float(self.burst), now))
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        allowed = bucket.tokens >= cost
        if allowed:
            bucket.tokens -= cost
        return bucket.tokens, allowed

    def _lock_timed_out(self) -> None:
        if not self._warned:
            log.warning("shared rate-limit lock not acquired; counting in this worker's bucket")
            self._warned = True

    def retry_after(self, cost: float = 1.0) -> int:
        return max(1, math.ceil(cost / self.rate)) if self.rate > 0 else 1
