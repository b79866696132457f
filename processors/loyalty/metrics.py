"""Domain metrics (the runtime already exports records/s, lag, commit latency, timers)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

RESULTS = Counter("loyalty_results_total", "Results by status", ["status"])
ISSUED = Counter("loyalty_rewards_issued_total", "Amount credited", ["reward_id"])
NOTIFICATIONS = Counter("loyalty_notifications_total", "Webhook events emitted", ["event"])
INTERNAL_ERRORS = Counter("loyalty_internal_errors_total", "Events or timers the engine could not apply")


_CHILDREN: dict[tuple[int, str], Any] = {}


def _child(metric: Counter, label: str) -> Any:
    """The labelled counter, cached: `labels()` takes a lock and builds a key on every call,
    a noticeable cost at several calls per event."""
    key = (id(metric), label)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(label)
    return child


def observe(results: list[dict], notifications: list[dict], credited: list[dict]) -> None:
    for res in results:
        _child(RESULTS, res["status"]).inc()
    for note in notifications:
        _child(NOTIFICATIONS, note["event"]).inc()
    for line in credited:
        _child(ISSUED, line["reward_id"]).inc(line["amount"])
