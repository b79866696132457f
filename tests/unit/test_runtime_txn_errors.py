"""librdkafka's transactional errors, handled as documented: retriable -> retry the call,
fatal -> a new producer and, when a commit's outcome was unknown, the committed offsets decide;
a producer error inside a handler is never the record's fault."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processors.runtime import runner as runner_module
from processors.runtime import transactions
from processors.runtime.example import CounterProcessor
from processors.runtime.runner import Runner, RuntimeOptions
from processors.runtime.transactions import TransactionBroken, retrying
from schemas.settings import Settings

TIMED_OUT = KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)
FENCED = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
ABORTABLE = KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transactions, "RETRY_BACKOFF_S", 0)


def failing(*errors: KafkaError):
    """A call failing with `errors` in turn, then returning "done"."""
    left = list(errors)
    calls: list[float] = []

    def call(timeout: float) -> str:
        calls.append(timeout)
        if left:
            raise KafkaException(left.pop(0))
        return "done"

    return call, calls


def test_a_retriable_error_retries_the_same_call_until_it_succeeds() -> None:
    call, calls = failing(TIMED_OUT, TIMED_OUT)
    assert retrying(call, deadline=1e12) == "done" and len(calls) == 3


@pytest.mark.parametrize("error", [FENCED, ABORTABLE])
def test_fatal_and_abortable_errors_are_not_retried(error: KafkaError) -> None:
    call, calls = failing(error)
    with pytest.raises(KafkaException):
        retrying(call, deadline=1e12)
    assert len(calls) == 1


class Producer:
    """Commits fail with `commit_error`; everything else succeeds."""

    def __init__(self, commit_error: KafkaError | None = None) -> None:
        self.commit_error = commit_error
        self.calls: list[str] = []

    def flush(self, timeout: float) -> int:
        return 0

    def send_offsets_to_transaction(self, offsets, metadata, timeout: float) -> None:
        self.calls.append("send_offsets")

    def commit_transaction(self, timeout: float) -> None:
        self.calls.append("commit")
        if self.commit_error:
            raise KafkaException(self.commit_error)

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")

    def produce(self, *args, **kwargs) -> None:
        raise KafkaException(ABORTABLE)


class Consumer:
    def __init__(self, committed: dict[tuple[str, int], int]) -> None:
        self.offsets = committed
        self.seeks: list[TopicPartition] = []

    def consumer_group_metadata(self) -> None:
        return None

    def assignment(self) -> list:
        return []

    def position(self, tps: list) -> list:
        return []

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.offsets.get((tp.topic, tp.partition), -1001))
                for tp in tps]  # fmt: skip


def runner_with(monkeypatch, tmp_path, committed: dict) -> tuple[Runner, list[Producer]]:
    runner = Runner(CounterProcessor(), Settings(), RuntimeOptions(state_dir=tmp_path))
    txn = runner.txn
    txn.producer = Producer(FENCED)
    txn.consumer = runner.consumer = Consumer(committed)
    renewed: list[Producer] = []

    def renew() -> None:  # what a new producer + init_transactions does, without a broker
        renewed.append(Producer())
        txn.producer = renewed[-1]

    monkeypatch.setattr(txn, "renew_producer", renew)
    txn.open = True
    txn.positions[("in", 0)] = 7
    return runner, renewed


def test_a_fatal_commit_renews_the_producer_and_keeps_a_commit_the_broker_made(monkeypatch, tmp_path):
    runner, renewed = runner_with(monkeypatch, tmp_path, committed={("in", 0): 7})
    runner.txn.commit()
    assert len(renewed) == 1 and "abort" not in runner.txn.producer.calls  # fatal: never aborted
    assert not runner.in_txn and not runner.txn.positions and not runner.txn.failing  # committed


def test_a_fatal_commit_the_broker_did_not_make_is_rewound(monkeypatch, tmp_path):
    runner, renewed = runner_with(monkeypatch, tmp_path, committed={("in", 0): 3})
    runner.txn.commit()
    assert len(renewed) == 1 and not runner.in_txn and not runner.txn.positions
    assert runner.txn.failing  # the watchdog counts from the last real commit


def test_a_producer_error_in_a_handler_is_not_the_records_fault(tmp_path) -> None:
    runner = Runner(CounterProcessor(), Settings(), RuntimeOptions(state_dir=tmp_path))
    runner.txn.producer = Producer()
    with pytest.raises(TransactionBroken):  # a BaseException: handlers' `except Exception` miss it
        try:
            runner._emit("counter.output", "k", {"key": "k"})
        except Exception:  # noqa: BLE001 - what a catch-all does
            pytest.fail("a catch-all swallowed the broken transaction")
    assert not runner._poison


def test_the_watchdog_stops_a_runner_that_cannot_commit(monkeypatch, tmp_path) -> None:
    runner = Runner(CounterProcessor(), Settings(), RuntimeOptions(state_dir=tmp_path, stall_timeout_s=60))
    now = runner.txn.last_commit
    monkeypatch.setattr(runner_module.time, "monotonic", lambda: now + 40)
    runner.txn.open = True
    assert not runner.healthy()  # 503 from half the limit
    runner._watchdog()  # not yet
    monkeypatch.setattr(runner_module.time, "monotonic", lambda: now + 61)
    with pytest.raises(runner_module.FatalError):
        runner._watchdog()
