"""Domain metrics (the runtime already exports records/s, lag, commit latency, timers).

Counted through `ctx.count`, so they move only when the record's transaction commits: an event
replayed after an abort or a crash never counts twice (processors/runtime/pending.py). The
runtime applies each label set once per transaction, so the counters' locks cost nothing per
event.
"""

from __future__ import annotations

from prometheus_client import Counter

from processors.runtime.api import Context

INTERNAL_ERRORS = Counter("loyalty_internal_errors_total", "Events or timers the engine could not apply")
RESULTS = Counter("loyalty_results_total", "Results by status", ["status"])
ISSUED = Counter("loyalty_rewards_issued_total", "Amount credited", ["reward_id"])
NOTIFICATIONS = Counter("loyalty_notifications_total", "Webhook events emitted", ["event"])


def observe(ctx: Context, out_notifications: list[dict], credited: list[dict]) -> None:
    """Webhook events and amounts credited of one applied event or timer (results are counted
    as they are emitted, processor._result)."""
    for note in out_notifications:
        ctx.count(NOTIFICATIONS, note["event"])
    for line in credited:
        ctx.count(ISSUED, line["reward_id"], amount=line["amount"])
