"""The revoke path has one time budget: flush, offsets and commit share it, then an abort."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from processors.runtime import runner as runner_module
from processors.runtime.example import CounterProcessor
from processors.runtime.runner import Runner, RuntimeOptions
from schemas.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SlowBroker:
    """A producer whose every call takes 4 s (on the fake clock) and whose commit times out;
    a consumer with nothing assigned."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, float]] = []

    def _call(self, name: str, timeout: float) -> None:
        self.calls.append((name, round(timeout, 3)))
        self.clock.now += 4

    def flush(self, timeout: float) -> int:
        self._call("flush", timeout)
        return 0

    def send_offsets_to_transaction(self, offsets, metadata, timeout: float) -> None:
        self._call("send_offsets", timeout)

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit", timeout)
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit timed out", retriable=True))

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort", timeout)

    def consumer_group_metadata(self) -> None:
        return None

    def assignment(self) -> list:
        return []


def test_a_commit_on_revoke_shares_one_budget_then_aborts(monkeypatch, tmp_path):
    clock = Clock()
    monkeypatch.setattr(runner_module.time, "monotonic", clock)
    runner = Runner(CounterProcessor(), Settings(), RuntimeOptions(state_dir=tmp_path, revoke_timeout_s=10))
    runner.txn.producer = runner.txn.consumer = runner.rebalance.consumer = broker = SlowBroker(clock)
    runner.txn.open = True
    runner.txn.positions[("t", 0)] = 5
    runner.rebalance.on_revoke(broker, [])
    assert broker.calls == [("flush", 10), ("send_offsets", 6), ("commit", 2), ("abort", 5.0)]
    assert not runner.in_txn and not runner.txn.positions
