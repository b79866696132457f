"""Prometheus metrics of the runtime and a tiny HTTP server for /healthz, /readyz and /metrics."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

RECORDS_IN = Counter("stream_records_in_total", "Records consumed", ["processor", "topic"])
RECORDS_OUT = Counter("stream_records_out_total", "Records produced", ["processor", "topic"])
PROCESS_LATENCY = Histogram(
    "stream_process_seconds",
    "Handler time per record",
    ["processor"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1),
)
COMMIT_LATENCY = Histogram(
    "stream_commit_seconds",
    "Transaction commit time",
    ["processor"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DEAD_LETTERS = Counter(
    "stream_dead_letters_total", "Records (or timers) sent to the processor's dead-letter topic",
    ["processor", "reason"],
)
ABORTS = Counter("stream_transactions_aborted_total", "Aborted transactions", ["processor"])
LAG = Gauge("stream_consumer_lag", "Records behind the end", ["processor", "topic", "partition"])
RESTORE_RECORDS = Counter(
    "stream_restore_records_total", "Changelog records restored", ["processor", "store"]
)
RESTORE_SECONDS = Counter("stream_restore_seconds_total", "Time spent restoring", ["processor", "store"])
RESTORE_REMAINING = Gauge(
    "stream_restore_remaining_records", "Changelog offsets left to restore",
    ["processor", "store", "partition"],
)  # fmt: skip
RESTORING = Gauge("stream_restoring_partitions", "Assigned partitions still restoring", ["processor"])
TIMER_BACKLOG = Gauge("stream_timers_due", "Timers due and not yet fired", ["processor"])
TIMERS_FIRED = Counter("stream_timers_fired_total", "Timers fired", ["processor"])
ASSIGNED = Gauge("stream_assigned_partitions", "Partitions (tasks) owned", ["processor"])


HealthCheck = Callable[[], "bool | dict"]


def health_state(check: HealthCheck) -> tuple[int, bytes]:
    """(HTTP code, JSON body): a check returns a bool or a dict with "status" == "ok" when healthy."""
    state = check()
    if isinstance(state, bool):
        state = {"status": "ok" if state else "unhealthy"}
    return (200 if state.get("status") == "ok" else 503), orjson.dumps(state, default=str)


class HealthServer:
    """Serves /healthz (liveness: 200 when healthy, else 503), /readyz (readiness: `ready`, or
    `healthy` when the service has no separate notion of ready) and /metrics for every
    long-running service. A liveness probe must not restart a pod that is only busy (e.g.
    restoring its state), so the two are distinct checks.

    Binds METRICS_HOST (default 127.0.0.1; set 0.0.0.0 where a platform probes from outside)."""

    def __init__(
        self, port: int, healthy: HealthCheck, host: str | None = None, ready: HealthCheck | None = None
    ) -> None:
        outer = self
        host = host or os.environ.get("METRICS_HOST", "127.0.0.1")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path.startswith("/metrics"):
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif self.path.startswith("/healthz"):
                    self._send(*health_state(outer.healthy))
                elif self.path.startswith("/readyz"):
                    self._send(*health_state(outer.ready))
                else:
                    self._send(404, b'{"error":"not found"}')

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.healthy = healthy
        self.ready = ready or healthy
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="health")

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
