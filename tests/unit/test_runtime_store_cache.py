"""A cached store (`Processor.cached_stores`) reads each key from its backend once and then from
memory, and still answers exactly as an uncached one: its own writes, committed writes and
deletes, never an aborted write."""

import random

from processors.runtime.store import CACHED_KEYS, MemoryBackend, TransactionalStore


class CountingBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, key: bytes) -> bytes | None:
        self.gets += 1
        return super().get(key)


def test_a_cached_store_reads_a_key_from_the_backend_once():
    backend = CountingBackend()
    backend.write({b"exhausted:c1": b"100.0"}, 0)
    store = TransactionalStore("budgets", backend, cached=True)
    for _ in range(5):
        assert store.get("exhausted:c1") == 100.0
        assert store.get("exhausted:c2") is None  # a miss is remembered too
        store.commit(None)
    assert backend.gets == 2


def test_a_cached_store_answers_as_an_uncached_one_over_commits_and_aborts():
    rnd = random.Random(3)
    plain, cached = MemoryBackend(), CountingBackend()
    stores = [TransactionalStore("s", plain), TransactionalStore("s", cached, cached=True)]
    for _ in range(2_000):
        key = f"k{rnd.randrange(12)}"
        roll = rnd.random()
        for store in stores:
            if roll < 0.3:
                store.put(key, roll)
            elif roll < 0.4:
                store.delete(key)
        if roll > 0.95:
            for store in stores:
                store.commit(None)
        elif roll > 0.9:
            for store in stores:
                store.abort()
        assert stores[0].get(key) == stores[1].get(key)
    assert cached.gets <= 12  # each key once at most


def test_a_full_cache_starts_over_instead_of_growing():
    store = TransactionalStore("s", MemoryBackend(), cached=True)
    for n in range(CACHED_KEYS + 10):
        store.get(f"k{n}")
    assert len(store._cache) <= CACHED_KEYS
