"""Prometheus metrics of the runtime, the lag metric every consuming service shares, and a
tiny HTTP server for /healthz, /readyz and /metrics.

Every long-running service but ingest (which answers on its API port) serves them on
METRICS_PORT (default 9100, `--metrics-port` wins) bound to METRICS_HOST (default 0.0.0.0, so
a container's port can be probed and scraped; the local stack sets 127.0.0.1).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from confluent_kafka import Consumer, KafkaException
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from schemas.settings import Settings
from schemas.topics import base_name

DEFAULT_METRICS_PORT = 9100
DEFAULT_METRICS_HOST = "0.0.0.0"  # noqa: S104 - a container's probes and scrapes come from outside


PORT_HELP = "/healthz, /readyz and /metrics (default: METRICS_PORT or 9100; 0: any free port)"


def metrics_port() -> int:
    """The default of every service's `--metrics-port`: METRICS_PORT, else 9100."""
    return int(os.environ.get("METRICS_PORT") or DEFAULT_METRICS_PORT)


def metrics_host() -> str:
    return os.environ.get("METRICS_HOST") or DEFAULT_METRICS_HOST


RECORDS_IN = Counter("stream_records_in_total", "Records consumed", ["processor", "topic"])
RECORDS_OUT = Counter("stream_records_out_total", "Records produced", ["processor", "topic"])
REROUTED = Counter(
    "stream_records_rerouted_total",
    "Records found on a partition their key does not hash to (a producer with another "
    "partitioner), forwarded to the key's partition",
    ["processor", "topic"],
)
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
# One lag metric for every consumer (the stream processors, delivery, the sink): records from
# where it reads (the sink: its offsets in PostgreSQL) to the end of the partition. `consumer`,
# not `service`, which Kubernetes service discovery puts on every target.
LAG = Gauge(
    "consumer_lag", "Records between the consumer's position and the end of the partition",
    ["consumer", "topic", "partition"],
)  # fmt: skip
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


class LagReport:
    """One consumer's lag per (topic, partition) it owns. A partition it no longer owns (revoked
    in a rebalance) drops out of the gauge, so a sum over replicas counts each partition once."""

    def __init__(self, consumer: str) -> None:
        self.consumer = consumer
        self._shown: set[tuple[str, str]] = set()

    def update(self, lags: dict[tuple[str, int], int]) -> None:
        """`lags`: (logical topic, partition) -> records behind, for every owned partition."""
        shown = {(topic, str(partition)) for topic, partition in lags}
        for topic, partition in self._shown - shown:
            LAG.remove(self.consumer, topic, partition)
        for (topic, partition), lag in lags.items():
            LAG.labels(self.consumer, topic, str(partition)).set(max(0, lag))
        self._shown = shown


def position_lags(consumer: Consumer, settings: Settings) -> dict[tuple[str, int], int]:
    """High watermark (cached from fetches: no broker call) minus position, per assigned
    partition whose position and end are both known; topics by their logical name."""
    lags: dict[tuple[str, int], int] = {}
    for tp in consumer.position(consumer.assignment()):
        try:
            _, high = consumer.get_watermark_offsets(tp, cached=True)
        except KafkaException:
            continue
        if high >= 0 and tp.offset >= 0:
            lags[(base_name(tp.topic, settings), tp.partition)] = high - tp.offset
    return lags


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

    Binds `host`, else METRICS_HOST (default 0.0.0.0: reachable in a container)."""

    def __init__(
        self, port: int, healthy: HealthCheck, host: str | None = None, ready: HealthCheck | None = None
    ) -> None:
        outer = self
        host = host or metrics_host()

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
