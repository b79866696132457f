"""A task = one input partition number: its stores, its durable timers and the handler context.

Timers live in the task's `timers` store (so they have a changelog and move with the
partition; its layout is in timers.py). The task remembers the earliest due time so the
punctuator costs nothing while no timer is due.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from itertools import islice
from typing import Any

from processors.runtime import local_index
from processors.runtime.api import Context, Processor, Record, Timer
from processors.runtime.pending import PendingMetrics
from processors.runtime.store import Backend, TransactionalStore
from processors.runtime.timers import DUE, LEGACY_INDEX, TIMERS_STORE, index_key, timer_key
from schemas.program import Program

__all__ = ["TIMERS_STORE", "PartitionTask", "TaskContext", "TimerFailed"]

_NEVER = 1 << 62
DUE_EXACT_BELOW = 1000  # due timers counted exactly at every turn up to this many
DUE_RECOUNT_S = 1.0

Emit = Callable[[str, str, dict[str, Any]], None]


class TimerFailed(Exception):
    """A timer's handler raised; the runner dead-letters the timer after rewinding."""

    def __init__(self, timer: Timer, error: BaseException) -> None:
        super().__init__(f"timer {timer.id}: {error!r}")
        self.timer = timer
        self.error = error


class PartitionTask:
    """Owns the stores of one partition and runs handlers against them."""

    def __init__(
        self,
        processor: Processor,
        partition: int,
        backends: dict[str, Backend],
        emit: Emit,
        now: Callable[[], int],
        config: Callable[[], Program],
        max_record_bytes: int | None = None,
        pending: PendingMetrics | None = None,
    ) -> None:
        self.processor = processor
        self.partition = partition
        cached = processor.cached_stores
        indexes = local_index.load(local_index.indexes_of(processor.local_indexes))
        codecs = processor.store_codecs
        self.stores = {
            name: TransactionalStore(name, b, max_record_bytes, cached=name in cached, codec=codecs.get(name),
                                     local=indexes[name].is_local if name in indexes else None)  # fmt: skip
            for name, b in backends.items()
        }
        # the runner's (one per transaction, every task); its own when run alone
        self.pending = pending if pending is not None else PendingMetrics()
        self.context = TaskContext(self, emit, now, config)
        self.next_due = _NEVER
        self._due = 0  # due_count's last count, less the timers fired since
        self._due_counted = 0.0
        self._cancels = 0  # timers cancelled so far (fire_due: has a handler cancelled one?)
        # written by a version before the local index: ids are also looked up under `i/`
        self._legacy_index = next(self.timers.range(LEGACY_INDEX, "i0"), None) is not None
        self.reload_timers()

    # -- timers -----------------------------------------------------------------------------
    @property
    def timers(self) -> TransactionalStore:
        return self.stores[TIMERS_STORE]

    def reload_timers(self) -> None:
        first = next(self.timers.range(DUE, "t0"), None)
        self.next_due = first[1]["at"] if first else _NEVER

    def schedule(self, at: int, key: str, payload: dict[str, Any], timer_id: str | None) -> str:
        timer_id = timer_id or uuid.uuid4().hex
        self.cancel(timer_id)
        self.timers.put(timer_key(at, timer_id), {"id": timer_id, "key": key, "at": at, "payload": payload})
        self.timers.put(index_key(timer_id), at)
        self.next_due = min(self.next_due, at)
        return timer_id

    def cancel(self, timer_id: str) -> None:
        at = self._at(timer_id)
        if at is not None:
            self.timers.delete(timer_key(at, timer_id))
            self._forget(timer_id)
            self._cancels += 1  # fire_due re-checks the due timers it listed before

    def timer(self, timer_id: str) -> Timer | None:
        at = self._at(timer_id)
        t = self.timers.get(timer_key(at, timer_id)) if at is not None else None
        return _as_timer(t) if t else None

    def _at(self, timer_id: str) -> int | None:
        at = self.timers.get(index_key(timer_id))
        if at is None and self._legacy_index:
            at = self.timers.get(LEGACY_INDEX + timer_id)
        return at

    def _forget(self, timer_id: str) -> None:
        """Delete the id's index entry (and the old layout's, in a store that has them)."""
        self.timers.delete(index_key(timer_id))
        if self._legacy_index:
            self.timers.delete(LEGACY_INDEX + timer_id)

    def due_count(self, now: int) -> int:
        """Timers due by `now` and not fired (the stream_timers_due gauge, every loop turn).
        Counted exactly while there are few; a backlog of thousands (every timer of a large
        state is due after a long stop) is counted at most once a second and decremented by
        the firings in between: counting 800k timers took the loop seconds per turn."""
        if now < self.next_due:
            return 0
        if self._due > DUE_EXACT_BELOW and time.monotonic() < self._due_counted + DUE_RECOUNT_S:
            return self._due
        self._due = self.timers.count(DUE, timer_key(now + 1, ""))
        self._due_counted = time.monotonic()
        return self._due

    def fire_due(
        self,
        now: int,
        limit: int = 1000,
        skip: dict[str, BaseException] | None = None,
        dead: Callable[[Timer, BaseException], None] | None = None,
        deadline: float | None = None,
    ) -> int:
        """Run on_timer for due timers (oldest first) inside the current transaction.

        A timer in `skip` (its handler raised before) is removed and handed to `dead` instead;
        a handler that raises now surfaces as TimerFailed, naming the timer. At `deadline`
        (time.monotonic) it stops after the timer in hand: the rest fire on later turns, so a
        large due backlog cannot stretch one transaction towards its timeout."""
        if now < self.next_due:
            return 0
        fired = 0
        while fired < limit and not (fired and _passed(deadline)):
            # the first `limit - fired` only: range() is lazy, a list of all would decode every
            # due timer at every firing (all of a large state's after a long stop)
            due = list(islice(self.timers.range(DUE, timer_key(now + 1, "")), limit - fired))
            if not due:
                break
            cancels = self._cancels
            for key, t in due:
                if self._cancels != cancels and (t := self.timers.get(key)) is None:
                    continue  # a handler of this batch cancelled it, or moved it later
                self.timers.delete(key)
                self._forget(t["id"])
                timer = _as_timer(t)
                fired += 1
                error = skip.pop(timer.id, None) if skip else None
                if error is not None and dead is not None:
                    dead(timer, error)
                    continue
                try:
                    self.processor.on_timer(self.context, timer)
                except Exception as exc:
                    raise TimerFailed(timer, exc) from exc
                if _passed(deadline):
                    break
        self.reload_timers()
        self._due = max(0, self._due - fired)
        return fired

    # -- handlers and transaction edges ------------------------------------------------------
    def process(self, record: Record) -> None:
        self.processor.process(self.context, record)

    def on_config(self, program: Program) -> None:
        self.processor.on_config(self.context, program)

    def commit(self, checkpoints: dict[str, int]) -> None:
        for name, store in self.stores.items():
            store.commit(checkpoints.get(name))

    def abort(self) -> None:
        for store in self.stores.values():
            store.abort()
        self.reload_timers()

    def close(self) -> None:
        for store in self.stores.values():
            store.backend.close()


class TaskContext(Context):
    """The `ctx` handlers receive; everything it does joins the current transaction."""

    def __init__(
        self, task: PartitionTask, emit: Emit, now: Callable[[], int], config: Callable[[], Program]
    ) -> None:
        self._task = task
        self._emit = emit
        self._now = now
        self._config = config
        self.partition = task.partition

    @property
    def config(self) -> Program:
        return self._config()

    def now(self) -> int:
        return self._now()

    def store(self, name: str) -> TransactionalStore:
        try:
            return self._task.stores[name]
        except KeyError:
            raise KeyError(f"store {name!r} is not declared by {self._task.processor.name}") from None

    def emit(self, topic: str, key: str, value: dict[str, Any]) -> None:
        if topic not in self._task.processor.outputs:
            raise ValueError(f"{topic!r} is not an output of {self._task.processor.name}")
        self._emit(topic, key, value)

    def schedule(self, at: int, key: str, payload: dict[str, Any], timer_id: str | None = None) -> str:
        return self._task.schedule(int(at), key, payload, timer_id)

    def cancel(self, timer_id: str) -> None:
        self._task.cancel(timer_id)

    def timer(self, timer_id: str) -> Timer | None:
        return self._task.timer(timer_id)

    def count(self, counter: Any, *labels: str, amount: float = 1.0) -> None:
        self._task.pending.add(counter, labels, amount)


def _as_timer(t: dict[str, Any]) -> Timer:
    """A `t/` record of the timers store as the Timer handlers receive."""
    return Timer(t["id"], t["key"], t["at"], t["payload"])


def _passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
