"""State stores: a transactional overlay on a backend (RocksDB via rocksdict, or memory).

Writes go to an overlay that the handler reads back immediately; they reach the backend only
when the Kafka transaction that carries their changelog records has committed (`commit`), and
vanish on abort (`abort`). The backend keeps the changelog offset it has applied (the
checkpoint) in the same atomic write batch as the data, so data and checkpoint never disagree.
RocksDB's own write-ahead log is off: the changelog is the log. After a crash RocksDB comes back
at an older flushed batch, checkpoint included, and restore replays the changelog from there.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson
from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteOptions

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
    """Backend for unit tests (processors.runtime.testing)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
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
        for key in sorted(self.data):
            if key >= start and (end is None or key < end):
                yield key, self.data[key]

    def checkpoint(self) -> int | None:
        return self._checkpoint

    def close(self) -> None:
        pass


_BLOCK_CACHE_BYTES = 64 << 20
_block_cache: Cache | None = None


def _options() -> Options:
    """Bloom filters, because most lookups miss (an event id not seen yet: ~2 us instead of
    ~30 us once the store has files on disk), and one block cache shared by every store of the
    process."""
    global _block_cache
    if _block_cache is None:
        _block_cache = Cache(_BLOCK_CACHE_BYTES)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    table.set_block_cache(_block_cache)
    options = Options(raw_mode=True)
    options.set_block_based_table_factory(table)
    return options


class RocksBackend:
    """One RocksDB per store per partition, raw bytes keys and values."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = Rdict(str(path), options=_options())
        no_wal = WriteOptions()
        no_wal.disable_wal = True
        self.db.set_write_options(no_wal)

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

    def items(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
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
        """Flush the memtable (no WAL would replay it), then close."""
        self.db.flush(True)
        self.db.close()

    @staticmethod
    def wipe(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


class TransactionalStore:
    """The `Store` a handler sees: JSON values, read-your-writes, commit/abort with the txn.

    `max_bytes` (the broker's record limit) makes put() refuse a value whose changelog record
    the broker would refuse at commit: the handler raises, so only its event fails."""

    def __init__(self, name: str, backend: Backend, max_bytes: int | None = None) -> None:
        self.name = name
        self.backend = backend
        self.max_bytes = max_bytes
        self.overlay: dict[bytes, bytes | None] = {}

    def get(self, key: str, default: Any = None) -> Any:
        raw = self.overlay.get(k := key.encode(), _DELETED)
        if raw is _DELETED:
            raw = self.backend.get(k)
        return default if raw is None else orjson.loads(raw)

    def put(self, key: str, value: Any) -> None:
        raw, data = key.encode(), orjson.dumps(value)
        if self.max_bytes is not None and len(raw) + len(data) > self.max_bytes:
            raise RecordTooLarge(f"store {self.name!r} value of key {key!r}", len(raw) + len(data),
                                 self.max_bytes)  # fmt: skip
        self.overlay[raw] = data

    def delete(self, key: str) -> None:
        self.overlay[key.encode()] = None

    def range(self, start: str | None = None, end: str | None = None) -> Iterator[tuple[str, Any]]:
        """Keys in [start, end) in order, the overlay's writes and deletes over the backend's.
        Lazy: the backend's sorted stream is merged with the overlay's, so the first key costs
        one seek, not a copy of the range (the timers' `next(range(...))` at a task's start
        and after every firing used to read all of a partition's timers: seconds at 1M)."""
        lo = (start or "").encode() or b"\x01"
        hi = end.encode() if end is not None else None
        overlay = sorted((k, v) for k, v in self.overlay.items() if k >= lo and (hi is None or k < hi))
        i = 0
        for key, raw in self.backend.items(lo, hi):
            while i < len(overlay) and overlay[i][0] < key:
                if overlay[i][1] is not None:
                    yield overlay[i][0].decode(), orjson.loads(overlay[i][1])
                i += 1
            if i < len(overlay) and overlay[i][0] == key:
                raw = overlay[i][1]  # the overlay's write (or delete) of a stored key
                i += 1
            if raw is not None:
                yield key.decode(), orjson.loads(raw)
        for key, raw in overlay[i:]:
            if raw is not None:
                yield key.decode(), orjson.loads(raw)

    def dirty(self) -> dict[bytes, bytes | None]:
        return self.overlay

    def commit(self, checkpoint: int | None) -> None:
        if self.overlay or checkpoint is not None:
            self.backend.write(self.overlay, checkpoint)
        self.overlay = {}

    def abort(self) -> None:
        self.overlay = {}

    def apply_restored(self, key: bytes, value: bytes | None, offset: int) -> None:
        """Apply one changelog record during restore (no overlay, no new changelog)."""
        self.backend.write({key: value}, offset)
