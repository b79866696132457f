"""Reading loyalty events and their results time-aligned while the sink has a backlog.

An event and its result that land in one batch take one merged `events` INSERT
(sinks/tables.py MERGED_INSERT); in different batches the result's upsert is a non-HOT update
of the row its event inserted, the largest item of PostgreSQL's work per row. Live, both come
within milliseconds and meet anyway. In a backlog librdkafka hands over about 1 MB of one
partition at a time, so a batch held one topic's records and almost no pair met.

So the records of a partition of `events.loyalty` and of the same partition of
`loyalty.results` (co-partitioned: every producer keys by customer with murmur2) are held
back in memory while they are ahead in time (Kafka timestamp) of what the other partition has
delivered, and released in step. Holding never stalls a partition:

- only while the other partition still has at least `min_lag` records to read (one that is
  idle, caught up or empty holds nothing back: a result that never comes blocks no event;
  live traffic, with next to no lag, is not held and keeps its latency);
- no longer than `idle_wait_ms` while the sink has nothing else to write (the other
  partition says it has records but does not deliver them), and never longer than
  `max_wait_ms` at all;
- above `max_held` records the partition is paused (memory bound) and resumed at half.

Held records are not in a batch, so their offsets are not stored: a rebalance or a resync
drops them and they are read again from PostgreSQL's offsets (exactly once is unchanged).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

Key = tuple[str, int]  # (physical topic, partition)


class Record(Protocol):
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def error(self) -> object: ...


# (key, next offset to read or None if nothing read yet) -> records left to read, None: unknown
LagOf = Callable[[Key, "int | None"], "int | None"]


@dataclass(frozen=True)
class AlignOptions:
    enabled: bool = True
    idle_wait_ms: int = 1000  # held no longer while nothing else is ready to write
    max_wait_ms: int = 30000  # a record is never held longer than this
    min_lag: int = 100  # hold only while the other partition has this many records to read
    max_held: int = 1000  # per partition; more pauses it, half of it resumes it


def release_limit(partner_frontier: int | None, partner_lag: int | None, min_lag: int) -> float:
    """The newest timestamp a held record may have to go into a batch now.

    `partner_frontier` is the newest timestamp read from the other partition of the pair,
    `partner_lag` how many records it still has to read (None: not known yet)."""
    if partner_lag is not None and partner_lag < min_lag:
        return math.inf  # nothing (or little) to wait for: live, idle or empty
    if partner_frontier is None:
        return -math.inf  # it has a backlog, but none of it has arrived yet
    return partner_frontier


class Aligner:
    """Holds records of paired partitions back until their partner has caught up in time,
    and hands released records over oldest (by timestamp) first across the partitions, so a
    batch cut holds both halves of its pairs."""

    def __init__(self, pairs: dict[str, str], options: AlignOptions | None = None) -> None:
        self.options = options or AlignOptions()
        self._partner = {**pairs, **{b: a for a, b in pairs.items()}}  # physical topic -> other
        self._held: dict[Key, deque[tuple[float, int, Record]]] = {}  # (received, ts, record)
        self._released: dict[Key, deque[tuple[int, Record]]] = {}  # (ts, record)
        self._frontier: dict[Key, int] = {}  # newest timestamp read (monotonic per partition)
        self._next: dict[Key, int] = {}  # offset after the last record read
        self._paused: set[Key] = set()
        self._free: deque[Record] = deque()  # not paired: ready at once
        self._ready = 0  # records released and not yet taken
        self.expired = 0  # records released by time, not by their partner catching up
        self._starved_since: float | None = None  # since when nothing was ready while holding

    def offer(self, records: Iterable[Record], now: float) -> None:
        """Take consumed records: held if they belong to a pair, else ready at once."""
        partner, held, free, frontier = self._partner, self._held, self._free, self._frontier
        for rec in records:
            topic = rec.topic()
            ts_type, ts = rec.timestamp()
            if topic not in partner or rec.error() or ts_type == 0 or ts < 0:
                free.append(rec)  # not paired, an error, or no timestamp to align by
                self._ready += 1
                continue
            key = (topic, rec.partition())
            queue = held.get(key)
            if queue is None:
                queue = held[key] = deque()
                self._released[key] = deque()
            # a timestamp older than one before it in its partition counts as that one, so
            # a partition's records stay in offset order (a batch's offsets are contiguous)
            ts = max(ts, frontier.get(key, ts))
            queue.append((now, ts, rec))
            frontier[key] = ts
            self._next[key] = rec.offset() + 1

    def release(self, now: float, lag_of: LagOf) -> None:
        """Release every held record that may go into a batch now."""
        o = self.options
        if self._ready or not any(self._held.values()):
            self._starved_since = None
        elif self._starved_since is None:
            self._starved_since = now
        expired = now - o.max_wait_ms / 1000
        if self._starved_since is not None and now - self._starved_since >= o.idle_wait_ms / 1000:
            expired = max(expired, now - o.idle_wait_ms / 1000)
        for key, queue in self._held.items():
            if not queue:
                continue
            out = self._released[key]
            other = (self._partner[key[0]], key[1])
            limit = release_limit(self._frontier.get(other), lag_of(other, self._next.get(other)), o.min_lag)
            n = len(out)
            while queue and queue[0][1] <= limit:
                _, ts, rec = queue.popleft()
                out.append((ts, rec))
            while queue and queue[0][0] <= expired:
                _, ts, rec = queue.popleft()
                out.append((ts, rec))
                self.expired += 1
            self._ready += len(out) - n

    def busy(self) -> None:
        """The sink was busy (handing a batch to its writer): that time is not waiting for a
        partner, so it does not count towards idle_wait_ms."""
        self._starved_since = None

    def ready(self) -> int:
        """Records released and not yet taken."""
        return self._ready

    def take(self, n: int) -> list[Record]:
        """Up to about `n` released records: unpaired ones first, then the oldest by timestamp
        of every partition (records sharing the last timestamp taken may exceed `n`)."""
        free = self._free
        out = [free.popleft() for _ in range(min(n, len(free)))]
        left = n - len(out)
        queues = [q for q in self._released.values() if q]
        if left > 0 and queues:
            if sum(map(len, queues)) <= left:
                cut = math.inf
            else:
                cut = heapq.nsmallest(left, (ts for q in queues for ts, _ in q))[-1]
            for q in queues:
                while q and q[0][0] <= cut:
                    out.append(q.popleft()[1])
        self._ready -= len(out)
        return out

    def pauses(self) -> tuple[list[Key], list[Key]]:
        """Partitions to pause (too much held) and to resume (held down to half)."""
        cap = self.options.max_held
        pause = [k for k, q in self._held.items() if len(q) > cap and k not in self._paused]
        resume = [k for k in self._paused if len(self._held.get(k, ())) <= cap // 2]
        self._paused.update(pause)
        self._paused.difference_update(resume)
        return pause, resume

    def next_deadline(self) -> float | None:
        """When held records are released by time at the latest (monotonic), None if none."""
        heads = [q[0][0] for q in self._held.values() if q]
        if not heads:
            return None
        deadline = min(heads) + self.options.max_wait_ms / 1000
        if self._starved_since is not None:
            idle = max(self._starved_since, min(heads)) + self.options.idle_wait_ms / 1000
            deadline = min(deadline, idle)
        return deadline

    def held(self) -> int:
        return sum(len(q) for q in self._held.values())

    def forget(self, keys: Iterable[Key] | None = None) -> None:
        """Drop what is held and ready (all, or of `keys`): it is read again from the stored
        offsets. Pause marks go too: assign and resync reset the consumer's pauses."""
        drop = set(self._held) | set(self._frontier) if keys is None else set(keys)
        for d in (self._held, self._released, self._frontier, self._next):
            for k in drop:
                d.pop(k, None)
        self._paused -= drop
        if keys is None:
            self._paused.clear()
            self._free.clear()
        else:
            self._free = deque(r for r in self._free if (r.topic(), r.partition()) not in drop)
        self._ready = len(self._free) + sum(map(len, self._released.values()))
        self._starved_since = None
