"""Domain metrics (the runtime already exports records/s, lag, commit latency, timers).

Counted in plain dicts and read by a collector at scrape time: a prometheus Counter takes a lock
on every `inc`, and the processor counts several things per event (about 3% of its CPU).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

INTERNAL_ERRORS = Counter("loyalty_internal_errors_total", "Events or timers the engine could not apply")

results: dict[str, float] = {}  # status -> results
issued: dict[str, float] = {}  # reward id -> amount credited
notifications: dict[str, float] = {}  # webhook event -> notifications emitted


def observe(out_results: list[dict], out_notifications: list[dict], credited: list[dict]) -> None:
    for res in out_results:
        results[res["status"]] = results.get(res["status"], 0) + 1
    for note in out_notifications:
        notifications[note["event"]] = notifications.get(note["event"], 0) + 1
    for line in credited:
        issued[line["reward_id"]] = issued.get(line["reward_id"], 0.0) + line["amount"]


class LoyaltyCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily]:
        families = (
            ("loyalty_results", "Results by status", "status", results),
            ("loyalty_rewards_issued", "Amount credited", "reward_id", issued),
            ("loyalty_notifications", "Webhook events emitted", "event", notifications),
        )
        for name, doc, label, counts in families:
            family = CounterMetricFamily(name, doc, labels=[label])
            for value, count in counts.copy().items():  # copy: one C call, safe against the writer
                family.add_metric([value], count)
            yield family


REGISTRY.register(LoyaltyCollector())
