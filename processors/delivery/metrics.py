"""Prometheus metrics and the /healthz + /metrics HTTP endpoint of the delivery service."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

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


def serve(port: int, healthy: Callable[[], bool]) -> ThreadingHTTPServer:
    """Serve /healthz and /metrics in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if self.path == "/metrics":
                body, ctype, code = generate_latest(), CONTENT_TYPE_LATEST, 200
            elif self.path == "/healthz":
                ok = healthy()
                body = b'{"status":"ok"}' if ok else b'{"status":"starting"}'
                ctype, code = "application/json", 200 if ok else 503
            else:
                body, ctype, code = b"not found", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, name="delivery-http", daemon=True).start()
    return server
