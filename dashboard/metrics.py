"""Prometheus metrics of the dashboard service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("dashboard_requests_total", "HTTP requests", ["route", "status"])
LATENCY = Histogram(
    "dashboard_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5, 10),
)
QUERY = Histogram(
    "dashboard_page_query_seconds",
    "Time to read one page's data from PostgreSQL (cache misses)",
    ["page"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5, 10),
)
CACHE = Counter("dashboard_cache_total", "Page data served from the cache or read", ["result"])
DB_UP = Gauge("dashboard_db_up", "1 when the last readiness check reached PostgreSQL")
LOGINS = Counter("dashboard_logins_total", "Login attempts", ["outcome"])
