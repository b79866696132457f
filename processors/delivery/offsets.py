"""At-least-once offset tracking: messages finish out of order (per-endpoint queues), so a
partition is committed only up to its lowest unfinished offset. A kill loses nothing; it may
re-send, and the receiver de-duplicates on webhook-id.
"""

from __future__ import annotations

from collections import defaultdict

TP = tuple[str, int]


class OffsetTracker:
    """Counts unfinished work per (topic, partition, offset); says what is safe to commit."""

    def __init__(self) -> None:
        self._pending: dict[TP, dict[int, int]] = defaultdict(dict)
        self._next: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}

    def add(self, tp: TP, offset: int, count: int = 1) -> None:
        """Register `count` jobs for a message (0: nothing to do, already finished)."""
        if count > 0:
            self._pending[tp][offset] = self._pending[tp].get(offset, 0) + count
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def done(self, tp: TP, offset: int) -> None:
        pending = self._pending.get(tp)
        if not pending or offset not in pending:
            return  # partition revoked meanwhile
        pending[offset] -= 1
        if pending[offset] <= 0:
            del pending[offset]

    def in_flight(self) -> int:
        return sum(len(p) for p in self._pending.values())

    def committable(self) -> dict[TP, int]:
        """Offsets (next to read) that advanced since the last call."""
        out = {}
        for tp, nxt in self._next.items():
            pending = self._pending.get(tp)
            safe = min(pending) if pending else nxt
            if safe > self._committed.get(tp, -1):
                out[tp] = safe
        return out

    def mark_committed(self, offsets: dict[TP, int]) -> None:
        self._committed.update(offsets)

    def forget(self, tps: list[TP]) -> None:
        for tp in tps:
            self._pending.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
