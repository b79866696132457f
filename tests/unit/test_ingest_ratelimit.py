"""The rate limit is one bucket per key for every worker of a host (shared memory), not one per
worker: two limiters on one SharedBuckets (as two workers) admit the burst once, not twice."""

from __future__ import annotations

from ingest.ratelimit import RateLimiter, SharedBuckets


def admitted(limiters: list[RateLimiter], key: str, tries: int) -> int:
    return sum(limiters[i % len(limiters)].take(key).allowed for i in range(tries))


def test_workers_sharing_buckets_admit_one_burst():
    shared = SharedBuckets(slots=4)
    workers = [RateLimiter(0.001, 10, ["a", "b"], shared) for _ in range(2)]
    assert admitted(workers, "a", 40) == 10
    assert admitted(workers, "b", 40) == 10  # a key of its own
    local = [RateLimiter(0.001, 10, ["a", "b"]) for _ in range(2)]
    assert admitted(local, "a", 40) == 20  # what two workers let through before


def test_a_held_lock_falls_back_to_the_workers_own_bucket():
    """A worker killed inside the critical section must not block the others' requests."""
    shared = SharedBuckets(slots=1)
    limiter = RateLimiter(0.001, 3, ["a"], shared)
    assert shared.lock.acquire()
    try:
        assert admitted([limiter], "a", 5) == 3
    finally:
        shared.lock.release()


def test_keys_past_the_table_keep_local_buckets():
    shared = SharedBuckets(slots=1)
    limiter = RateLimiter(0.001, 2, ["a", "b"], shared)
    assert admitted([limiter], "b", 5) == 2 and admitted([limiter], "a", 5) == 2
