"""Runtime logic without Kafka: transactional stores and durable timers."""

from __future__ import annotations

import orjson

from processors.runtime.api import Context, Processor, Record, Timer
from processors.runtime.example import INPUT, OUTPUT, CounterProcessor
from processors.runtime.store import MemoryBackend, RocksBackend, TransactionalStore
from processors.runtime.testing import TestDriver


def test_store_reads_its_own_writes_and_commits_atomically():
    backend = MemoryBackend()
    store = TransactionalStore("s", backend)
    store.put("a", {"n": 1})
    store.put("b", 2)
    assert store.get("a") == {"n": 1} and backend.get(b"a") is None  # invisible until commit
    store.commit(checkpoint=41)
    assert backend.get(b"a") == b'{"n":1}' and backend.checkpoint() == 41


def test_aborted_writes_leave_no_trace():
    backend = MemoryBackend()
    store = TransactionalStore("s", backend)
    store.put("a", 1)
    store.commit(None)
    store.put("a", 2)
    store.delete("a")
    store.abort()
    assert store.get("a") == 1


def test_range_merges_committed_and_pending_in_key_order(tmp_path):
    store = TransactionalStore("s", RocksBackend(tmp_path / "db"))
    store.put("k1", 1)
    store.put("k3", 3)
    store.commit(7)
    store.put("k2", 2)
    store.delete("k3")
    assert list(store.range("k", "l")) == [("k1", 1), ("k2", 2)]
    assert store.backend.checkpoint() == 7


def test_counter_counts_per_key_and_timer_fires_once_when_due():
    driver = TestDriver(CounterProcessor())
    driver.send(INPUT, "a", {"amount": 2})
    out = driver.send(INPUT, "a", {"amount": 3, "remind_in_ms": 1000})
    assert out == [(OUTPUT, "a", {"key": "a", "count": 2, "sum": 5})]
    assert driver.advance(999) == []
    fired = driver.advance(1)
    assert [v.get("reminder") for _, _, v in fired] == [True]
    assert driver.advance(10_000) == []


class Rescheduler(Processor):
    name = "r"
    inputs = ["in"]
    outputs = ["out"]

    def process(self, ctx: Context, record: Record) -> None:
        ctx.schedule(ctx.now() + record.value["in_ms"], record.key, {}, timer_id="only")
        if record.value.get("cancel"):
            ctx.cancel("only")

    def on_timer(self, ctx: Context, timer: Timer) -> None:
        ctx.emit("out", timer.key, {"at": timer.at})


def test_reusing_a_timer_id_replaces_the_timer_and_cancel_removes_it():
    driver = TestDriver(Rescheduler())
    driver.send("in", "k", {"in_ms": 100})
    driver.send("in", "k", {"in_ms": 500})
    assert driver.advance(200) == []
    assert len(driver.advance(300)) == 1
    driver.send("in", "k", {"in_ms": 100, "cancel": True})
    assert driver.advance(1000) == []


class Canceller(Processor):
    """Timer "first" cancels "second" or moves it later; both were due at the same time."""

    name = "c"
    inputs = ["in"]
    outputs = ["out"]

    def process(self, ctx: Context, record: Record) -> None:
        for timer_id in ("first", "second"):
            ctx.schedule(ctx.now() + 100, record.key, record.value, timer_id=timer_id)

    def on_timer(self, ctx: Context, timer: Timer) -> None:
        ctx.emit("out", timer.key, {"id": timer.id, "at": timer.at})
        if timer.id == "first" and timer.payload.get("then") == "cancel":
            ctx.cancel("second")
        elif timer.id == "first":
            ctx.schedule(timer.at + 1_000, timer.key, {}, timer_id="second")


def test_a_timer_cancelled_by_another_in_the_same_due_batch_does_not_fire():
    driver = TestDriver(Canceller())
    driver.send("in", "k", {"then": "cancel"})
    assert [v["id"] for _, _, v in driver.advance(100)] == ["first"]
    assert driver.advance(10_000) == []


def test_a_timer_moved_later_by_another_in_the_same_due_batch_fires_once_when_due():
    driver = TestDriver(Canceller())
    start = driver.clock.now_ms()
    driver.send("in", "k", {"then": "move"})
    assert [v["id"] for _, _, v in driver.advance(100)] == ["first"]
    assert driver.advance(999) == []
    assert [(v["id"], v["at"]) for _, _, v in driver.advance(1)] == [("second", start + 1_100)]
    assert driver.advance(10_000) == []


def test_a_transaction_runs_longer_only_while_catching_up_on_a_backlog():
    from processors.runtime.runner import RuntimeOptions, commit_due

    opts = RuntimeOptions(commit_interval_ms=100, catch_up_interval_ms=500, commit_every=10_000)
    assert not commit_due(opts, 50, 99, catching_up=False)
    assert commit_due(opts, 50, 100, catching_up=False)
    assert not commit_due(opts, 5_000, 300, catching_up=True)
    assert commit_due(opts, 5_000, 500, catching_up=True)
    assert commit_due(opts, 10_000, 1, catching_up=True)  # the record cap holds either way




class _Quiet(Processor):
    name = "quiet"
    inputs = outputs = stores = []

    def process(self, ctx: Context, record: Record) -> None:
        pass

    def on_timer(self, ctx: Context, timer: Timer) -> None:
        pass


def test_the_due_count_of_a_large_backlog_follows_the_firings_down_to_zero():
    """Thousands of due timers (a large state after a long stop) are counted once, then
    decremented by what fires: recounting them at every loop turn took seconds per turn."""
    from processors.runtime.task import TIMERS_STORE, PartitionTask

    backend = _CountingBackend()
    task = PartitionTask(_Quiet(), 0, {TIMERS_STORE: backend}, emit=lambda *a: None,
                         now=lambda: 0, config=lambda: None)  # fmt: skip
    for i in range(3_500):
        task.schedule(100 + i, f"k{i}", {}, f"t{i}")
    task.commit({})
    backend.read = 0
    assert task.due_count(50) == 0
    assert task.due_count(10_000) == 3_500
    counts = []
    while task.fire_due(10_000):
        task.commit({})
        counts.append(task.due_count(10_000))
    assert counts == [2_500, 1_500, 500, 0]
    # each timer read about three times (counted, fired, stepped over by the next-due lookup
    # before its delete commits), not once per firing and once per count: 20,000 reads before
    assert backend.read < 3.5 * 3_500, backend.read


def test_timers_stop_firing_at_the_turns_deadline_and_go_on_next_turn():
    """A large due backlog fires in slices: at the deadline fire_due stops after the timer in
    hand (always at least one, so it makes progress), and the rest fire on later calls."""
    import time

    from processors.runtime.task import TIMERS_STORE, PartitionTask

    fired: list[str] = []

    class Recording(_Quiet):
        def on_timer(self, ctx: Context, timer: Timer) -> None:
            fired.append(timer.id)

    task = PartitionTask(Recording(), 0, {TIMERS_STORE: MemoryBackend()}, emit=lambda *a: None,
                         now=lambda: 0, config=lambda: None)  # fmt: skip
    for i in range(50):
        task.schedule(100 + i, f"k{i}", {}, f"t{i:02d}")
    task.commit({})
    assert task.fire_due(10_000, deadline=time.monotonic() - 1) == 1
    assert fired == ["t00"] and task.due_count(10_000) == 49
    assert task.fire_due(10_000, deadline=time.monotonic() + 60) == 49
    assert fired == [f"t{i:02d}" for i in range(50)]


class _CountingBackend(MemoryBackend):
    read = 0

    def items(self, start: bytes, end: bytes | None):
        for item in super().items(start, end):
            self.read += 1
            yield item


class Reversed:
    """A value codec for the test: JSON, bytes reversed (so plain JSON cannot read them)."""

    @staticmethod
    def dumps(value):
        return orjson.dumps(value)[::-1]

    @staticmethod
    def loads(raw):
        return orjson.loads(raw[::-1])


def test_a_store_codec_turns_values_into_bytes_and_back_and_the_changelog_carries_its_bytes():
    store = TransactionalStore("s", MemoryBackend(), codec=Reversed())
    store.put("a", {"n": 1})
    assert store.changelog() == {b"a": b'}1:"n"{'} and store.get("a") == {"n": 1}
    store.commit(1)
    assert store.backend.get(b"a") == b'}1:"n"{'
    assert store.get("a") == {"n": 1} and list(store.range()) == [("a", {"n": 1})]
