"""The layout of a task's `timers` store: one changelog record per timer.

- `t/<at>/<id>` -> the timer: due order, the only key the changelog carries;
- `idx/<id>` -> at: finds a timer to cancel or replace by its id. A *local* key: written to
  the store's RocksDB with the transaction but never to the changelog, and derived again from
  each `t/` record when a changelog is restored (`derived`), so a timer costs a restore one
  record instead of two (12 of the loyalty state's 17 records per customer were timer records).

Restoring the index from the changelog is exact because of two rules: at a commit an id has at
most one `t/` key (scheduling cancels first), and a commit's deletes reach the changelog before
its writes (`TransactionalStore.changelog`): a `t/` delete therefore never removes the index of
the same id's live timer.

Stores written before this layout also hold `i/<id>` -> at, logged (`LEGACY_INDEX`): they are
read when `idx/` has no entry (a store kept on disk from then has none) and deleted as their
timers fire or are cancelled."""

from __future__ import annotations

TIMERS_STORE = "timers"
DUE = "t/"
INDEX = "idx/"
LEGACY_INDEX = "i/"
LOCAL = INDEX.encode()  # the prefix of keys the changelog never carries
_DUE = DUE.encode()
_AT = slice(len(DUE), len(DUE) + 15)  # the due time's digits in a timer key
_AT_DIGITS = _AT.stop - _AT.start


def timer_key(at: int, timer_id: str) -> str:
    return f"{DUE}{at:0{_AT_DIGITS}d}/{timer_id}"


def index_key(timer_id: str) -> str:
    return f"{INDEX}{timer_id}"


def is_local(key: bytes) -> bool:
    """The id index is local (local_index.py): never in the changelog."""
    return key.startswith(LOCAL)


def derived(key: bytes, value: bytes | None) -> tuple[bytes, bytes | None] | None:
    """The index record a restored changelog record implies: (key, at) for a timer written,
    (key, None) for one deleted, None for any other key."""
    if not key.startswith(_DUE):
        return None
    index = LOCAL + key[_AT.stop + 1 :]
    if value is None:
        return index, None
    return index, key[_AT].lstrip(b"0") or b"0"
