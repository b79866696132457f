"""Prometheus metrics and the /healthz + /metrics HTTP endpoint of the delivery service.

The per-endpoint children are looked up once (`attempts`, `latency`, `queued`): `labels()`
takes a lock and builds a key on every call, paid per webhook (about 2% of delivery's samples
under bench/e2e.py). Endpoints are the program's, so the caches stay small."""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "delivery_attempts_total",
    "HTTP delivery attempts by endpoint and outcome",
    ["endpoint", "outcome"],
)
LATENCY = Histogram(
    "delivery_latency_seconds",
    "HTTP delivery latency per endpoint",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUED = Gauge("delivery_queue_depth", "Messages waiting per endpoint", ["endpoint"])
IN_FLIGHT = Gauge("delivery_in_flight_messages", "Consumed messages not yet finished")
BACKPRESSURE = Counter(
    "delivery_backpressure_waits_total",
    "Partitions paused at a record because its endpoint's queue was full",
    ["endpoint"],
)
SHED = Counter(
    "delivery_shed_total",
    "Messages moved to a retry tier without an attempt: their endpoint's queue stayed full "
    "longer than the bound (docs/delivery.md#backpressure-and-isolation)",
    ["endpoint"],
)


@cache
def attempts(endpoint: str, outcome: str) -> Counter:
    return DELIVERIES.labels(endpoint, outcome)


@cache
def latency(endpoint: str) -> Histogram:
    return LATENCY.labels(endpoint)


@cache
def queued(endpoint: str) -> Gauge:
    return QUEUED.labels(endpoint)
