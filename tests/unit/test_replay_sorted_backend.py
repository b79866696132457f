"""The replays' SortedBackend (processors/loyalty/replay.py) answers every read as the runtime's
MemoryBackend does, over a random run of writes and deletes: only faster range reads."""

from __future__ import annotations

import random

from processors.loyalty.replay import SortedBackend
from processors.runtime.store import MemoryBackend


def test_sorted_backend_reads_as_the_memory_backend():
    rnd = random.Random(5)
    fast, plain = SortedBackend(), MemoryBackend()
    keys = [f"k{n:03d}".encode() for n in range(60)]
    for turn in range(400):
        changes = {rnd.choice(keys): None if rnd.random() < 0.3 else str(turn).encode() for _ in range(5)}
        fast.write(changes, turn)
        plain.write(changes, turn)
        lo, hi = sorted(rnd.sample(keys, 2))
        assert list(fast.items(lo, hi)) == list(plain.items(lo, hi))
        assert list(fast.items(lo, None)) == list(plain.items(lo, None))
        probe = rnd.choice(keys)
        assert fast.get(probe) == plain.get(probe)
    assert fast.checkpoint() == plain.checkpoint() == 399 and fast.keys == sorted(plain.data)
