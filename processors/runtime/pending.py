"""Counters of the open transaction, applied only when it commits.

A handler runs again whenever its transaction is aborted (a handler raised, the broker refused a
commit, the producer was fenced) or the process died before the commit: the records it emitted
then are never visible, so a counter incremented while it ran would count them twice. Handlers
(`ctx.count`) and the runtime put their increments here instead; the runner applies them after
`commit_transaction` succeeded and drops them when the next transaction begins without a commit
in between. Prometheus then counts what the committed output holds: no more, no less.

Adding to a dict is also cheaper than a prometheus `inc` (which takes a lock): the counters are
touched once per label set and transaction, not once per record.
"""

from __future__ import annotations

from prometheus_client import Counter


class PendingMetrics:
    """Counter increments of one transaction, keyed by (counter, label values)."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[tuple[Counter, tuple[str, ...]], float] = {}

    def add(self, counter: Counter, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
        key = (counter, labels)
        self._counts[key] = self._counts.get(key, 0.0) + amount

    def apply(self) -> None:
        """The transaction committed: its increments reach prometheus."""
        counts, self._counts = self._counts, {}
        for (counter, labels), amount in counts.items():
            (counter.labels(*labels) if labels else counter).inc(amount)

    def discard(self) -> None:
        """The transaction did not commit: what it counted never happened."""
        self._counts.clear()

    def __len__(self) -> int:
        return len(self._counts)
