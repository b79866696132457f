"""Local indexes: keys of a store kept in its RocksDB only, never sent to its changelog.

An index that can be computed from the store's logged records need not cost a restore a
changelog record of its own: a restore derives it again from each record it writes. Two stores
have one: the runtime's `timers` (`idx/<id>` -> at, timers.py) and the loyalty processor's
`ledger` (`<customer>\\x01<line id>` -> the line's key, loyalty/ledger.py).

A local index is a module with two functions:

- `is_local(key: bytes) -> bool`: the key is the index's (the store's changelog leaves it out);
- `derived(key: bytes, value: bytes | None) -> (key, value | None) | None`: the index record a
  restored changelog record implies (a put, a delete with None), or None.

Modules are named by import path (a processor's `local_indexes`), so a restore worker process
(restore_worker.py) finds the same functions as the processor that started it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Protocol

from processors.runtime.timers import TIMERS_STORE

RUNTIME_INDEXES = {TIMERS_STORE: "processors.runtime.timers"}


class LocalIndex(Protocol):
    def is_local(self, key: bytes) -> bool: ...

    def derived(self, key: bytes, value: bytes | None) -> tuple[bytes, bytes | None] | None: ...


def indexes_of(declared: Mapping[str, str]) -> dict[str, str]:
    """Store -> index module: the runtime's and a processor's `local_indexes`."""
    return {**RUNTIME_INDEXES, **declared}


def restored(key: bytes, value: bytes | None, index: LocalIndex | None) -> dict[bytes, bytes | None]:
    """The writes a restore makes for one changelog record (None: a delete): the record and the
    index record it implies. The Restorer's loop does the same into a WriteBatch, inline."""
    changes = {key: value}
    if index is not None and (local := index.derived(key, value)) is not None:
        changes[local[0]] = local[1]
    return changes


def load(indexes: Mapping[str, str]) -> dict[str, LocalIndex]:
    """Store -> the index module, imported."""
    modules: dict[str, ModuleType] = {store: importlib.import_module(name) for store, name in indexes.items()}
    return modules  # type: ignore[return-value] - a module with both functions is a LocalIndex
