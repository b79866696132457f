"""Domain metrics (the runtime already exports records/s, lag, commit latency, timers)."""

from __future__ import annotations

from prometheus_client import Counter

RESULTS = Counter("loyalty_results_total", "Results by status", ["status"])
ISSUED = Counter("loyalty_rewards_issued_total", "Amount credited", ["reward_id"])
NOTIFICATIONS = Counter("loyalty_notifications_total", "Webhook events emitted", ["event"])
INTERNAL_ERRORS = Counter("loyalty_internal_errors_total", "Events or timers the engine could not apply")


def observe(results: list[dict], notifications: list[dict], credited: list[dict]) -> None:
    for res in results:
        RESULTS.labels(res["status"]).inc()
    for note in notifications:
        NOTIFICATIONS.labels(note["event"]).inc()
    for line in credited:
        ISSUED.labels(line["reward_id"]).inc(line["amount"])
