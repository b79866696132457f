"""ctx.count reaches prometheus when the transaction commits and never when it aborts; the
in-memory TestDriver treats each send as a transaction, as the runner does."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, Counter

from processors.runtime.api import Context, Record
from processors.runtime.example import INPUT, CounterProcessor
from processors.runtime.pending import PendingMetrics
from processors.runtime.testing import TestDriver

SEEN = Counter("test_pending_seen_total", "Records a test handler counted", ["kind"])


class CountsThenMayFail(CounterProcessor):
    def process(self, ctx: Context, record: Record) -> None:
        ctx.count(SEEN, "record")
        ctx.count(SEEN, "amount", amount=record.value["amount"])
        if record.value.get("boom"):
            raise RuntimeError("handler failed after counting")
        super().process(ctx, record)


def seen(kind: str) -> float:
    return REGISTRY.get_sample_value("test_pending_seen_total", {"kind": kind}) or 0.0


def test_a_committed_record_counts_and_an_aborted_one_does_not() -> None:
    driver = TestDriver(CountsThenMayFail())
    records, amount = seen("record"), seen("amount")
    driver.send(INPUT, "a", {"amount": 5})
    assert (seen("record"), seen("amount")) == (records + 1, amount + 5)
    with pytest.raises(RuntimeError):
        driver.send(INPUT, "a", {"amount": 7, "boom": True})
    assert (seen("record"), seen("amount")) == (records + 1, amount + 5)  # rolled back
    driver.send(INPUT, "a", {"amount": 2})
    assert (seen("record"), seen("amount")) == (records + 2, amount + 7)


def test_pending_sums_per_label_set_until_applied() -> None:
    pending = PendingMetrics()
    before = seen("x")
    for _ in range(3):
        pending.add(SEEN, ("x",), 2)
    assert len(pending) == 1 and seen("x") == before
    pending.apply()
    assert seen("x") == before + 6 and len(pending) == 0
    pending.add(SEEN, ("x",))
    pending.discard()
    pending.apply()
    assert seen("x") == before + 6
