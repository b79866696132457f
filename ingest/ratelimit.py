"""Per-key token bucket (per worker process): cheap, no shared state, good enough to stop a
runaway client. Limits and headers follow the common X-RateLimit-* convention."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


@dataclass
class Bucket:
    tokens: float
    updated: float = field(default_factory=time.monotonic)


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
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = max(1, burst)
        self._buckets: dict[str, Bucket] = {}

    def take(self, key: str, cost: float = 1.0) -> Decision:
        if self.rate <= 0:
            return Decision(True, self.burst, self.burst, 0)
        now = time.monotonic()
        bucket = self._buckets.setdefault(key, Bucket(float(self.burst), now))
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        allowed = bucket.tokens >= cost
        if allowed:
            bucket.tokens -= cost
        reset = math.ceil((self.burst - bucket.tokens) / self.rate)
        return Decision(allowed, self.burst, int(bucket.tokens), reset)

    def retry_after(self, cost: float = 1.0) -> int:
        return max(1, math.ceil(cost / self.rate)) if self.rate > 0 else 1
