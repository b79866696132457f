"""A customer's open ledger lines ("buckets": accumulations with what is left of them).

Two views with one interface, chosen by the state's shape:

- `ListLedger`: the lines in the state itself (`state["buckets"]`, a list). What the pure
  engine's callers use (replays, simulations, unit tests), what a new customer starts with, and
  the shape customer records had before the `ledger` store (issue 19).
- `StoreLedger`: the lines in the processor's `ledger` store, one key per line, so an event
  reads and writes only the lines it touches: the customer record keeps a bounded summary
  (`state["ledger"]`: per reward the balance, what never expires and the line count, and the
  next line sequence number) instead of every line, and is no longer rewritten whole, with
  every line, at each event.

Keys of the `ledger` store (`\\x00` and `\\x01` sort below any character of an id, so one
customer's keys never interleave with another's):

    <customer>\\x00<reward>\\x00<expiration ms, 15 digits | ~>\\x00<issued ms, 15 digits>\\x00<seq>  -> line
    <customer>\\x01<line id>                                                             -> its key

A range scan of `<customer>\\x00<reward>\\x00` returns a reward's lines in consumption order
(oldest-expiring first, non-expiring last, then oldest issued, then the order they were
opened: `seq`), so spending, expiry and the wallet's next expirations read only the first few
lines. A line closed (nothing left) is deleted: a tombstone in the changelog, so compaction
frees it.

The second key finds a line by id (reservations, reversals). It is a *local* key
(local_index.py: `is_local`, `derived`): written to RocksDB with the line, never to the
changelog, and derived again from each restored line, so a line costs a restore one record,
not two. A restore cannot tell which id a tombstone's line had, so a line closed in the part
of the changelog it reads may leave its id key behind, pointing at a key that is gone; and
changelogs written before the key became local still carry id records, which are restored
like any record and never deleted. Either way `find` checks the id of the line it reads, so a
stale id key reads as a closed line.

The processor `attach`es the store to the record it read and `flush`es the call's line
changes into the store before writing the record. A record of the old shape (its lines in
`buckets`) runs that call as a ListLedger, and `flush` moves its lines into the store: old
state migrates on first touch (restore from an old changelog included).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import orjson

from processors.runtime.api import Store

Line = dict[str, Any]
EPS = 1e-9
SUMMARY = "ledger"  # the customer record's summary of a StoreLedger
BUCKETS = "buckets"  # the state key of the lines (a list, or a StoreLedger while attached)


def fifo_key(b: Line) -> tuple[bool, int, int]:
    """Consumption order: oldest-expiring first, non-expiring last, then oldest issued."""
    return (b["expiration_date"] is None, b["expiration_date"] or 0, b["issued_at"])


class Ledger(Protocol):
    def ordered(self, reward_id: str) -> Iterator[Line]:
        """The reward's open lines (negative ones too) in consumption order, lazily."""
        ...

    def first(self, reward_id: str) -> Line | None:
        """The reward's first line in consumption order (the soonest to expire)."""
        ...

    def expiring(self, reward_id: str, dates: int) -> dict[int, float]:
        """The reward's first `dates` expiration dates with what is left of their lines."""
        ...

    def find(self, line_id: str) -> Line | None: ...

    def add(self, bucket: Line) -> None: ...

    def set(self, bucket: Line, remaining: float) -> None:
        """What is left of an open line; nothing left closes it (at `tidy`)."""
        ...

    def tidy(self) -> None: ...

    def rewards(self) -> list[str]: ...

    def balance(self) -> dict[str, float]: ...

    def undated(self, reward_id: str) -> float:
        """What is left of the reward's lines that never expire."""
        ...

    def lines(self) -> list[Line]:
        """Every open line (a merge moves them all; a record's first bounded wallet)."""
        ...


class ListLedger:
    """The lines as a list in the state (the engine's original layout)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def ordered(self, reward_id: str) -> Iterator[Line]:
        return iter(sorted((b for b in self.state[BUCKETS] if b["reward_id"] == reward_id), key=fifo_key))

    def first(self, reward_id: str) -> Line | None:
        return next(self.ordered(reward_id), None)

    def expiring(self, reward_id: str, dates: int) -> dict[int, float]:
        return _expiring(self.ordered(reward_id), dates)

    def find(self, line_id: str) -> Line | None:
        return next((b for b in self.state[BUCKETS] if b["id"] == line_id), None)

    def add(self, bucket: Line) -> None:
        self.state[BUCKETS].append(bucket)

    def set(self, bucket: Line, remaining: float) -> None:
        bucket["remaining"] = remaining

    def tidy(self) -> None:
        self.state[BUCKETS] = [b for b in self.state[BUCKETS] if abs(b["remaining"]) > EPS]

    def rewards(self) -> list[str]:
        return list(dict.fromkeys(b["reward_id"] for b in self.state[BUCKETS]))

    def balance(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for b in self.state[BUCKETS]:
            out[b["reward_id"]] = out.get(b["reward_id"], 0.0) + b["remaining"]
        return out

    def undated(self, reward_id: str) -> float:
        lines = [b for b in self.state[BUCKETS] if b["reward_id"] == reward_id]
        return sum((b["remaining"] for b in lines if b["expiration_date"] is None), 0.0)

    def lines(self) -> list[Line]:
        return list(self.state[BUCKETS])


def _expiring(lines: Iterator[Line], dates: int) -> dict[int, float]:
    by_date: dict[int, float] = {}
    for b in lines:
        at = b["expiration_date"]
        if at is None or (at not in by_date and len(by_date) == dates):
            break
        by_date[at] = by_date.get(at, 0.0) + b["remaining"]
    return by_date


def _ms(value: int | None) -> str:
    return "~" if value is None else f"{int(value):015d}"


class StoreLedger:
    """The lines in the `ledger` store; this call's changes are kept here until `flush`, so an
    input refused half-way (the processor re-reads the record) leaves the store as it was."""

    def __init__(self, store: Store, customer_id: str, summary: dict[str, Any]) -> None:
        self.store, self.cid, self.summary = store, customer_id, summary
        summary.setdefault("seq", 0)
        summary.setdefault("rewards", {})
        self.cache: dict[str, Line | None] = {}  # order key -> line read or changed (None: closed)
        self.keys: dict[str, str | None] = {}  # line id -> order key (None: closed)
        self.dirty: set[str] = set()  # order keys to write (or delete) at flush
        self.new_ids: set[str] = set()  # line ids whose id key is to be written
        self.stored: set[str] = set()  # order keys read from the store (a delete needs a tombstone)
        self.closed_ids: set[str] = set()  # ids of stored lines closed by this call
        self.version: dict[str, int] = {}  # reward -> changes so far (the memos below follow it)
        self.memo: dict[tuple[str, str, int], tuple[int, Any]] = {}  # first / expiring per reward
        self.reads: dict[str, tuple[int, list[tuple[str, Line]], Iterator[tuple[str, Line]]]] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> StoreLedger:
        """A copy to try changes on (the tier warning's "as it will be then"): it reads the
        same store and never writes to it."""
        other = StoreLedger(self.store, self.cid, copy.deepcopy(self.summary, memo))
        other.cache = copy.deepcopy(self.cache, memo)
        other.keys, other.dirty, other.new_ids = dict(self.keys), set(self.dirty), set(self.new_ids)
        other.stored, other.closed_ids = set(self.stored), set(self.closed_ids)
        other.version = {r: v + 1 for r, v in self.version.items()}  # memos hold this view's lines
        return other

    # -- keys ---------------------------------------------------------------------------------
    def _prefix(self, reward_id: str) -> str:
        return f"{self.cid}\x00{reward_id}\x00"

    def _key(self, b: Line, seq: int) -> str:
        when = f"{_ms(b['expiration_date'])}\x00{_ms(b['issued_at'])}"
        return f"{self._prefix(b['reward_id'])}{when}\x00{seq:012d}"

    def _id_key(self, line_id: str) -> str:
        return f"{self.cid}\x01{line_id}"

    def _key_of(self, line_id: str) -> str | None:
        if line_id in self.keys:
            return self.keys[line_id]
        key = self.store.get(self._id_key(line_id))
        self.keys[line_id] = key
        return key

    def _load(self, key: str, value: Line | None = None) -> Line | None:
        if key in self.cache:
            return self.cache[key]
        line = value if value is not None else self.store.get(key)
        self.cache[key] = line
        if line is not None:
            self.stored.add(key)
            self.keys.setdefault(line["id"], key)
        return line

    # -- the interface --------------------------------------------------------------------------
    def ordered(self, reward_id: str) -> Iterator[Line]:
        return (line for _, line in self._scan(reward_id))

    def _scan(self, reward_id: str) -> Iterator[tuple[str, Line]]:
        """(key, line) in key order, reading the store only past what an earlier scan of this
        call read while the reward's lines are unchanged (one seek, not one per reader)."""
        version = self.version.get(reward_id, 0)
        read = self.reads.get(reward_id)
        if read is None or read[0] != version:
            read = (version, [], self._read(reward_id))
            self.reads[reward_id] = read
        _, lines, source = read
        i = 0
        while True:
            if i < len(lines):
                yield lines[i]
                i += 1
                continue
            item = next(source, None)
            if item is None:
                return
            lines.append(item)

    def _read(self, reward_id: str) -> Iterator[tuple[str, Line]]:
        """(key, line) in key order: the store's lines from the reward's first open key (the
        summary's `from`: spent and expired lines are tombstones below it, which a scan from
        the prefix would step over in RocksDB until compaction), this call's changes over them."""
        prefix = self._prefix(reward_id)
        start = prefix + self.summary["rewards"].get(reward_id, {}).get("from", "")
        added = sorted(k for k in self.cache if k.startswith(prefix) and k in self.dirty)
        i = 0
        for key, value in self.store.range(start, prefix[:-1] + "\x01"):
            while i < len(added) and added[i] < key:
                line = self.cache[added[i]]
                i += 1
                if line is not None:
                    yield added[i - 1], line
            if i < len(added) and added[i] == key:
                i += 1
            line = self._load(key, value)
            if line is not None:
                yield key, line
        for key in added[i:]:
            line = self.cache[key]
            if line is not None:
                yield key, line

    def _memo(self, name: str, reward_id: str, arg: int, compute: Any) -> Any:
        """A scan's answer until the reward's lines change: the wallet record, the expiry and
        the notices of one call read the same first lines several times."""
        version = self.version.get(reward_id, 0)
        hit = self.memo.get((name, reward_id, arg))
        if hit is not None and hit[0] == version:
            return hit[1]
        value = compute()
        self.memo[(name, reward_id, arg)] = (version, value)
        return value

    def first(self, reward_id: str) -> Line | None:
        return self._first(reward_id)[1]

    def _first(self, reward_id: str) -> tuple[str, Line] | tuple[None, None]:
        return self._memo("first", reward_id, 0, lambda: next(self._scan(reward_id), (None, None)))

    def expiring(self, reward_id: str, dates: int) -> dict[int, float]:
        found = self._memo("expiring", reward_id, dates, lambda: _expiring(self.ordered(reward_id), dates))
        return dict(found)

    def find(self, line_id: str) -> Line | None:
        key = self._key_of(line_id)
        line = None if key is None else self._load(key)
        if line is not None and line["id"] != line_id:  # a stale id key (see the docstring)
            self.keys[line_id] = None
            return None
        return line

    def add(self, bucket: Line) -> None:
        seq = self.summary["seq"]
        self.summary["seq"] = seq + 1
        key = self._key(bucket, seq)
        self.cache[key], self.keys[bucket["id"]] = bucket, key
        self.dirty.add(key)
        self.new_ids.add(bucket["id"])
        empty = {"balance": 0.0, "undated": 0.0, "lines": 0}
        totals = self.summary["rewards"].setdefault(bucket["reward_id"], empty)
        totals["lines"] += 1
        bucket_left = bucket["remaining"]
        bucket["remaining"] = 0.0
        self.set(bucket, bucket_left)

    def set(self, bucket: Line, remaining: float) -> None:
        key = self.keys[bucket["id"]]
        assert key is not None and self.cache.get(key) is bucket, "a line not read through the ledger"
        totals = self.summary["rewards"][bucket["reward_id"]]
        self.version[bucket["reward_id"]] = self.version.get(bucket["reward_id"], 0) + 1
        delta = remaining - bucket["remaining"]
        bucket["remaining"] = remaining
        totals["balance"] += delta
        if bucket["expiration_date"] is None:
            totals["undated"] += delta
        self.dirty.add(key)
        if abs(remaining) <= EPS:  # closed: gone from the store (and from every view) at once
            self.cache[key] = None
            self.keys[bucket["id"]] = None
            if key in self.stored:
                self.closed_ids.add(bucket["id"])
            self.new_ids.discard(bucket["id"])
            totals["lines"] -= 1
            if totals["lines"] <= 0:  # no line left: exactly nothing (no rounding left over)
                del self.summary["rewards"][bucket["reward_id"]]

    def tidy(self) -> None:
        """Closed lines left at once (`set`)."""

    def rewards(self) -> list[str]:
        return list(self.summary["rewards"])

    def balance(self) -> dict[str, float]:
        return {r: t["balance"] for r, t in self.summary["rewards"].items()}

    def undated(self, reward_id: str) -> float:
        return self.summary["rewards"].get(reward_id, {}).get("undated", 0.0)

    def lines(self) -> list[Line]:
        return [b for r in self.rewards() for b in self.ordered(r)]

    # -- writing ----------------------------------------------------------------------------------
    def write(self) -> None:
        """This call's changes into the store: changed lines, new id keys, closed lines and
        their id keys deleted (a line opened and closed within the call never reaches it)."""
        for reward_id in self.version:  # where the next scans start (see `_scan`)
            totals = self.summary["rewards"].get(reward_id)
            key = self._first(reward_id)[0] if totals is not None else None
            if key is not None:
                totals["from"] = key[len(self._prefix(reward_id)) :]
        for key in sorted(self.dirty):
            if self.cache[key] is None and key in self.stored:
                self.store.delete(key)
        for line_id in sorted(self.closed_ids - self.new_ids):
            self.store.delete(self._id_key(line_id))
        for key in sorted(self.dirty):
            line = self.cache[key]
            if line is not None:
                self.store.put(key, line)
                if line["id"] in self.new_ids:
                    self.store.put(self._id_key(line["id"]), key)
        self.dirty, self.new_ids, self.closed_ids = set(), set(), set()
        for _, _, source in self.reads.values():  # their store iterators pin RocksDB files
            source.close()
        self.reads.clear()


def of(state: dict[str, Any]) -> Ledger:
    """The ledger of a state: its list, or the store view `attach` put there."""
    lines = state[BUCKETS]
    return ListLedger(state) if isinstance(lines, list) else lines


def attach(state: dict[str, Any] | None, store: Store) -> dict[str, Any] | None:
    """The record as read from the `customers` store, with its lines readable: a record of
    the store layout gets a StoreLedger; an old record (lines in `buckets`) keeps them as a
    list for this call and moves them into the store at `flush`."""
    if state is not None and SUMMARY in state and BUCKETS not in state:
        state[BUCKETS] = StoreLedger(store, state["customer_id"], state.pop(SUMMARY))
    return state


def flush(state: dict[str, Any], store: Store) -> dict[str, Any]:
    """The record to write to the `customers` store, the call's line changes written to the
    `ledger` store. A state holding its lines as a list (a new customer, an old record) moves
    them into the store here, in their order."""
    lines = state.pop(BUCKETS, None)
    if isinstance(lines, StoreLedger):
        lines.write()
        state[SUMMARY] = lines.summary
        return state
    view = StoreLedger(store, state["customer_id"], {})
    for b in lines or []:
        view.add(b)
    view.write()
    state[SUMMARY] = view.summary
    return state


def is_local(key: bytes) -> bool:
    """An id key (`<customer>\\x01<line id>`): ids hold no control character, so only a
    line's key has a `\\x00`."""
    return b"\x00" not in key


def derived(key: bytes, value: bytes | None) -> tuple[bytes, bytes | None] | None:
    """The id key a restored line implies: (`<customer>\\x01<its id>`, its key) for a line
    written, None for anything else (a tombstone does not say which id its line had)."""
    cut = key.find(b"\x00")
    if cut < 0 or value is None:
        return None
    return key[:cut] + b"\x01" + _line_id(value), orjson.dumps(key.decode())  # as the store writes it


_ID_FIELD = b'{"id":"'  # a line's first field (wallet.line): orjson keeps a dict's order
_ID_AT = len(_ID_FIELD)


def _line_id(value: bytes) -> bytes:
    """The id of a line's JSON, read off its start without parsing it all (a restore derives
    one per line: parsing was a sixth of a 1M-customer restore's CPU); an id that JSON had to
    escape, or another shape, is parsed."""
    if value.startswith(_ID_FIELD):
        found = value[_ID_AT : value.find(b'"', _ID_AT)]
        if b"\\" not in found:
            return found
    return orjson.loads(value)["id"].encode()


def customer_lines(items: Mapping[str, Any], customer_id: str) -> list[Line]:
    """A customer's open lines among a `ledger` store's items (key -> value), in key order
    (per reward, consumption order): what tests and tools read."""
    lo, hi = f"{customer_id}\x00", f"{customer_id}\x01"
    return [items[k] for k in sorted(items) if lo <= k < hi]
