"""State stores: a transactional overlay on a backend (RocksDB via rocksdict, or memory).

Writes go to an overlay that the handler reads back immediately; they reach the backend only
when the Kafka transaction that carries their changelog records has committed (`commit`), and
vanish on abort (`abort`). The backend keeps the changelog offset it has applied (the
checkpoint) in the same atomic write batch as the data, so data and checkpoint never disagree.
While processing, RocksDB's write-ahead log is on (not synced: a write() per commit into the
page cache, which a SIGKILL does not lose), so a killed process reopens at its last committed
batch and restore replays only what came after. A restore bulk-loads without the WAL (and
without compactions, into an unsorted memtable), then flushes and reopens for processing
(`end_bulk`): a kill mid-restore reopens at the last flushed batch, checkpoint included.
"""

from __future__ import annotations

import shutil
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson
from rocksdict import (
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    MemtableFactory,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)
from sortedcontainers import SortedDict, SortedList

from processors.runtime.limits import RecordTooLarge

CHECKPOINT_KEY = b"\x00checkpoint"
_DELETED = object()


class Backend(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def write(self, changes: dict[bytes, bytes | None], checkpoint: int | None) -> None: ...

    def items(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]: ...

    def checkpoint(self) -> int | None: ...

    def close(self) -> None: ...


class MemoryBackend:
    """Backend for unit tests (processors.runtime.testing) and in-memory replays (simulate,
    backtests). Its keys are kept sorted: a range read costs a bisect and the keys it returns,
    where sorting them on every read made a replay of thousands of customers quadratic."""

    def __init__(self) -> None:
        self.data: SortedDict = SortedDict()
        self._checkpoint: int | None = None

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def write(self, changes: dict[bytes, bytes | None], checkpoint: int | None) -> None:
        for key, value in changes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        if checkpoint is not None:
            self._checkpoint = checkpoint

    def items(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        for key in self.data.irange(start, end, inclusive=(True, False)):
            yield key, self.data[key]

    def checkpoint(self) -> int | None:
        return self._checkpoint

    def close(self) -> None:
        pass


_BLOCK_CACHE_BYTES = 64 << 20
_L0_SLOWDOWN = 20  # RocksDB's level0_slowdown_writes_trigger (default)
_block_cache: Cache | None = None


def _options(bulk: bool, compactions: bool = True) -> Options:
    """Bloom filters, because most lookups miss (an event id not seen yet: ~2 us instead of
    ~30 us once the store has files on disk), and one block cache shared by every store of the
    process. `bulk` (restore, write-only): a vector memtable (an append, sorted once at flush,
    instead of a skiplist insert per key), no compactions and uncompressed files (Snappy was a
    tenth of a restore's CPU); once reopened for processing, the background threads compact
    (and compress) the restored files while the processor runs."""
    global _block_cache
    if _block_cache is None:
        _block_cache = Cache(_BLOCK_CACHE_BYTES)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    table.set_block_cache(_block_cache)
    options = Options(raw_mode=True)
    options.set_block_based_table_factory(table)
    if bulk:
        options.set_allow_concurrent_memtable_write(False)  # the vector memtable cannot
        options.set_memtable_factory(MemtableFactory.vector())
        options.set_compression_type(DBCompressionType.none())
    options.set_disable_auto_compactions(bulk or not compactions)
    return options


class RocksBackend:
    """One RocksDB per store per partition, raw bytes keys and values. `bulk` opens it for a
    restore (see the module docstring); `end_bulk` makes it a processing store."""

    def __init__(self, path: Path, bulk: bool = False, compactions: bool = True) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        # range reads not yet run to their end: each holds a RocksDB iterator, which keeps the
        # database (and its LOCK) alive past close() until the reader is collected
        self._readers: weakref.WeakSet = weakref.WeakSet()
        self._open(bulk, compactions)
        if not bulk:
            self._compact_if_slowed()

    def _open(self, bulk: bool, compactions: bool = True) -> None:
        self.bulk, self.closed = bulk, False
        options = _options(bulk, compactions)
        # given for the column family too: else rocksdict reopens it with the options it last
        # had (a bulk load's vector memtable) and RocksDB refuses the mix
        self.db = Rdict(str(self.path), options=options, column_families={"default": options})
        write = WriteOptions()
        write.disable_wal = bulk
        self.db.set_write_options(write)

    def end_bulk(self, compactions: bool = True) -> None:
        """Flush what the restore wrote (it has no WAL) and reopen for processing, before any
        write with the WAL: a recovery would replay those on top of unflushed restore data.
        `compactions=False` leaves them off until `resume_compactions()` (the restorer's other
        partitions are still loading: compacting now would take CPU from them)."""
        if self.bulk:
            self.close()
            self._open(bulk=False, compactions=compactions)
            self._compact_if_slowed()

    def _compact_if_slowed(self) -> None:
        """Compact now when a bulk load left as many level-0 files as make RocksDB slow every
        write down."""
        if self.db.property_int_value("rocksdb.num-files-at-level0") >= _L0_SLOWDOWN:
            self.db.compact_range(None, None)

    def start_flush(self) -> None:
        """Begin flushing the memtable in the background (a restored store's changelog is read
        to its end): `end_bulk` then waits for less, so the handover's flushes overlap the
        restore of the other stores instead of running one after another at the end."""
        if not self.closed:
            self.db.flush(False)

    def resume_compactions(self) -> None:
        if not self.closed:
            self.db.set_options({"disable_auto_compactions": "false"})

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def write(self, changes: dict[bytes, bytes | None], checkpoint: int | None) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if checkpoint is not None:
            batch.put(CHECKPOINT_KEY, str(checkpoint).encode())
        self.db.write(batch)

    def write_restored(self, batch: WriteBatch, checkpoint: int) -> None:
        """Apply a restore's batch of changelog records (built by the caller: no dict in
        between) with the checkpoint, atomically."""
        batch.put(CHECKPOINT_KEY, str(checkpoint).encode())
        self.db.write(batch)

    def items(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        reader = self._items(start, end)
        self._readers.add(reader)
        return reader

    def _items(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        it = self.db.iter()
        it.seek(max(start, b"\x01"))
        while it.valid():
            key = it.key()
            if end is not None and key >= end:
                break
            yield key, it.value()
            it.next()

    def checkpoint(self) -> int | None:
        raw = self.db.get(CHECKPOINT_KEY)
        return int(raw) if raw is not None else None

    def close(self) -> None:
        """End the range reads still open (a handler's half-read scan, e.g. the ledger's), flush
        the memtable (a bulk load has no WAL; and a reopen need not replay it), then close.
        An open reader kept the database locked: the partition's next owner in this process
        (a rebalance handing it back) could not open it."""
        for reader in list(self._readers):
            reader.close()
        self.db.flush(True)
        self.db.close()
        self.closed = True

    @staticmethod
    def wipe(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


CACHED_KEYS = 10_000  # a cached store's committed values kept in memory, at most


class ValueCodec(Protocol):
    """How a store's values become bytes and back (a store's default: JSON)."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, raw: bytes) -> Any: ...


class TransactionalStore:
    """The `Store` a handler sees: JSON values, read-your-writes, commit/abort with the txn.

    `max_bytes` (the broker's record limit) makes put() refuse a value whose changelog record
    the broker would refuse at commit: the handler raises, so only its event fails.

    `cached`: the backend's values read are kept in memory (up to CACHED_KEYS keys), for a
    small store whose same few keys are read by every record (the loyalty processor's
    `budgets`: two lookups per purchase). Sound because the backend changes only through this
    store's `commit`, which updates the cache (a restore fills the backend before its task,
    and so this store, exists); an abort leaves the backend, so the cache, as it was.

    `local`: tells the keys kept in the backend only, never sent to the changelog (an index a
    restore derives from the logged keys, local_index.py).

    `codec`: turns values into bytes and back (`dumps`, `loads`); JSON by default. The
    changelog and a restore carry its bytes as they are."""

    def __init__(
        self,
        name: str,
        backend: Backend,
        max_bytes: int | None = None,
        cached: bool = False,
        local: Callable[[bytes], bool] | None = None,
        codec: ValueCodec | None = None,
    ) -> None:
        self.name = name
        self.local = local
        self._dumps, self._loads = (codec.dumps, codec.loads) if codec else (orjson.dumps, orjson.loads)
        self.backend = backend
        self.max_bytes = max_bytes
        self.overlay: dict[bytes, bytes | None] = {}
        self._cache: dict[bytes, bytes | None] | None = {} if cached else None
        # the overlay's keys in order, kept from the transaction's first range read on, so a
        # range costs a bisect, not a pass over every write of the open transaction (thousands
        # while catching up: a scan per event made it quadratic). Stores never read by range
        # (most) pay nothing for it.
        self._ordered: SortedList | None = None

    def get(self, key: str, default: Any = None) -> Any:
        raw = self.overlay.get(k := key.encode(), _DELETED)
        if raw is _DELETED:
            raw = self._read(k)
        return default if raw is None else self._loads(raw)

    def _read(self, key: bytes) -> bytes | None:
        cache = self._cache
        if cache is None:
            return self.backend.get(key)
        raw = cache.get(key, _DELETED)
        if raw is _DELETED:
            if len(cache) >= CACHED_KEYS:
                cache.clear()
            raw = cache[key] = self.backend.get(key)
        return raw

    def put(self, key: str, value: Any) -> None:
        raw, data = key.encode(), self._dumps(value)
        if self.max_bytes is not None and len(raw) + len(data) > self.max_bytes:
            raise RecordTooLarge(f"store {self.name!r} value of key {key!r}", len(raw) + len(data),
                                 self.max_bytes)  # fmt: skip
        self._write(raw, data)

    def delete(self, key: str) -> None:
        self._write(key.encode(), None)

    def _write(self, raw: bytes, data: bytes | None) -> None:
        if self._ordered is not None and raw not in self.overlay:
            self._ordered.add(raw)
        self.overlay[raw] = data

    def range(self, start: str | None = None, end: str | None = None) -> Iterator[tuple[str, Any]]:
        """Keys in [start, end) in order, the overlay's writes and deletes over the backend's.
        Lazy: the backend's sorted stream is merged with the overlay's, so the first key costs
        one seek, not a copy of the range (the timers' `next(range(...))` at a task's start
        and after every firing used to read all of a partition's timers: seconds at 1M)."""
        for key, raw in self._merged(start, end):
            yield key.decode(), self._loads(raw)

    def count(self, start: str | None = None, end: str | None = None) -> int:
        """How many keys range(start, end) would give, without decoding their values."""
        return sum(1 for _ in self._merged(start, end))

    def _merged(self, start: str | None, end: str | None) -> Iterator[tuple[bytes, bytes]]:
        lo = (start or "").encode() or b"\x01"
        hi = end.encode() if end is not None else None
        if self._ordered is None:
            self._ordered = SortedList(self.overlay)
        keys = self._ordered.irange(lo, hi, inclusive=(True, False))
        overlay = [(k, self.overlay[k]) for k in keys]
        i = 0
        for key, raw in self.backend.items(lo, hi):
            while i < len(overlay) and overlay[i][0] < key:
                if overlay[i][1] is not None:
                    yield overlay[i]
                i += 1
            if i < len(overlay) and overlay[i][0] == key:
                raw = overlay[i][1]  # the overlay's write (or delete) of a stored key
                i += 1
            if raw is not None:
                yield key, raw
        for key, raw in overlay[i:]:
            if raw is not None:
                yield key, raw

    def changelog(self) -> dict[bytes, bytes | None]:
        """This transaction's changelog records: each written key's final value (None: a
        tombstone). A store with local keys leaves them out and lists its deletes first, the
        order its restore derives them in (timers.py)."""
        if self.local is None:
            return self.overlay
        is_local = self.local
        deletes = {k: v for k, v in self.overlay.items() if v is None and not is_local(k)}
        return deletes | {k: v for k, v in self.overlay.items() if v is not None and not is_local(k)}

    def commit(self, checkpoint: int | None) -> None:
        if self.overlay or checkpoint is not None:
            self.backend.write(self.overlay, checkpoint)
            if self._cache is not None:
                for key, raw in self.overlay.items():
                    if key in self._cache:
                        self._cache[key] = raw
        self.abort()

    def abort(self) -> None:
        self.overlay = {}
        self._ordered = None
