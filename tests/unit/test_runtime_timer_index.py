"""The timers store logs one record per timer: its id index is local and a restore derives it
again, the same as the index the task wrote, whatever was scheduled, replaced, cancelled or
fired (and after the changelog's compaction)."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from processors.runtime import timers
from processors.runtime.api import Context, Processor, Record, Timer
from processors.runtime.local_index import restored
from processors.runtime.store import MemoryBackend
from processors.runtime.task import PartitionTask
from processors.runtime.timers import TIMERS_STORE
from schemas.program import Program

IDS = ["a", "b", "c/x", "c"]  # "c/x": an id holding the separator


class Timed(Processor):
    """Schedules, replaces and cancels timers as each record says; records what fired."""

    name = "timed"
    inputs = ["in"]
    outputs = ["out"]

    def __init__(self) -> None:
        self.fired: list[tuple[str, int]] = []

    def process(self, ctx: Context, record: Record) -> None:
        op, timer_id, at = record.value["op"], record.value["id"], record.value["at"]
        if op == "cancel":
            ctx.cancel(timer_id)
        else:
            ctx.schedule(at, record.key, {"n": at}, timer_id)

    def on_timer(self, ctx: Context, timer: Timer) -> None:
        self.fired.append((timer.id, timer.at))
        if timer.at % 3 == 0:  # some handlers schedule their id again
            ctx.schedule(timer.at + 7, timer.key, {}, timer.id)


def task(backend: MemoryBackend, processor: Processor | None = None) -> PartitionTask:
    return PartitionTask(processor or Timed(), 0, {TIMERS_STORE: backend}, lambda *a: None, lambda: 0,
                         Program)  # fmt: skip


def restore(log: list[tuple[bytes, bytes | None]]) -> MemoryBackend:
    """A fresh store from changelog records, as the Restorer writes them."""
    backend = MemoryBackend()
    for key, value in log:
        backend.write(restored(key, value, timers), None)
    return backend


def compacted(log: list[tuple[bytes, bytes | None]]) -> list[tuple[bytes, bytes | None]]:
    """What log compaction leaves: each key's last record, at its own place."""
    last = {key: i for i, (key, _) in enumerate(log)}
    return [rec for i, rec in enumerate(log) if last[rec[0]] == i]


op = st.tuples(st.sampled_from(["schedule", "schedule", "cancel", "fire"]), st.sampled_from(IDS),
               st.integers(1, 30))  # fmt: skip


@given(st.lists(st.lists(op, max_size=6), max_size=12))
def test_a_restored_timers_store_equals_the_one_written(commits):
    live, log = MemoryBackend(), []
    t = task(live)
    for commit in commits:
        for kind, timer_id, at in commit:
            if kind == "fire":
                t.fire_due(at)
            else:
                t.process(Record("in", 0, 0, "k", {"op": kind, "id": timer_id, "at": at}, 0))
        log += list(t.timers.changelog().items())
        t.commit({})
    assert not [k for k, _ in log if not k.startswith(b"t/")]  # one record per timer, nothing else
    assert restore(log).data == live.data
    assert restore(compacted(log)).data == live.data


def test_a_timer_costs_its_changelog_one_record():
    t = task(MemoryBackend())
    for n, timer_id in enumerate(IDS):
        t.schedule(100 + n, "k", {}, timer_id)
    assert sorted(t.timers.changelog()) == sorted(f"t/{100 + n:015d}/{i}".encode() for n, i in enumerate(IDS))


def test_a_replaced_timers_delete_is_logged_before_its_new_write():
    backend = MemoryBackend()
    t = task(backend)
    t.schedule(200, "k", {}, "a")
    t.commit({})
    t.schedule(100, "k", {}, "a")  # t/100 is written before...
    t.schedule(200, "k", {}, "a")  # ...t/200 comes back and t/100 is deleted again
    assert list(t.timers.changelog().items())[0] == (b"t/000000000000100/a", None)
    t.commit({})
    assert restore([(b"t/000000000000200/a", b"{}"), *t.timers.changelog().items()]).get(b"idx/a") == b"200"


def test_a_store_of_the_old_layout_still_cancels_and_fires_by_id():
    """A store kept on disk from before the local index has `i/<id>` -> at and no `idx/`."""
    timer = {"id": "a", "key": "k", "at": 50, "payload": {}}
    backend = MemoryBackend()
    backend.write({b"t/000000000000050/a": orjson.dumps(timer), b"i/a": b"50",
                   b"t/000000000000061/b": orjson.dumps({**timer, "id": "b", "at": 61}), b"i/b": b"61"},
                  None)  # fmt: skip
    processor = Timed()
    t = task(backend, processor)
    t.cancel("a")
    changes = t.timers.changelog()
    assert changes == {b"i/a": None, b"t/000000000000050/a": None}  # the old index's record goes too
    t.commit({})
    t.fire_due(100)
    t.commit({})
    assert processor.fired == [("b", 61)]
    assert backend.data == {}
