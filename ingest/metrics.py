"""Prometheus metrics of the ingest service (per worker process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("ingest_requests_total", "HTTP requests", ["route", "status"])
LATENCY = Histogram(
    "ingest_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS = Counter("ingest_events_total", "Events by outcome", ["outcome", "path"])
SYNC_WAITS = Counter("ingest_sync_waits_total", "?wait=true requests by outcome", ["outcome"])
