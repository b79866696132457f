"""A stdlib webhook receiver for tests, the benchmark and local development: per-path
behaviour (fail first N, always fail, delay, Retry-After), signature check, de-duplication."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from processors.delivery.verify import VerificationError, verify


@dataclass
class Route:
    """`fail_first` calls answer `fail_status`; `delay_s` before answering; then 200."""

    fail_first: int = 0
    fail_status: int = 500
    always: int | None = None
    delay_s: float = 0.0
    retry_after: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # sent with failure answers (Location)
    secret: str | list[str] = ""
    calls: int = 0
    received: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)
    unique: dict[str, Any] = field(default_factory=dict)
    bad_signatures: int = 0


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 resets bursts of new connections


class Receiver:
    def __init__(self) -> None:
        self.routes: defaultdict[str, Route] = defaultdict(Route)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status, headers = receiver.handle(self.path, dict(self.headers), body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802 (stats for out-of-process use)
                body = json.dumps(receiver.stats()).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
        route = self.routes[path]
        with self.lock:
            route.calls += 1
            call = route.calls
            route.received.append((time.monotonic(), headers, body))
        if route.delay_s:
            time.sleep(route.delay_s)
        extra = dict(route.headers)
        if route.retry_after:
            extra["retry-after"] = route.retry_after
        if route.always is not None:
            return route.always, extra
        if call <= route.fail_first:
            return route.fail_status, extra
        if route.secret:
            try:
                payload = verify(body, headers, route.secret)
            except VerificationError:
                route.bad_signatures += 1
                return 401, {}
        else:
            payload = json.loads(body)
        with self.lock:
            route.unique.setdefault(headers.get("webhook-id", headers.get("Webhook-Id")), payload)
        return 200, {}

    def stats(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {p: {"calls": r.calls, "unique": len(r.unique)} for p, r in self.routes.items()}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main(argv: list[str] | None = None) -> int:
    """Serve until killed; prints the port. GET / returns per-path call and unique counts."""
    parser = argparse.ArgumentParser(prog="python -m processors.delivery.receiver")
    parser.add_argument("--secret", action="append", default=[], help="verify with these secrets")
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="answer each POST this late (a slow receiver)"
    )
    args = parser.parse_args(argv)
    receiver = Receiver()
    receiver.routes.default_factory = lambda: Route(secret=args.secret, delay_s=args.delay_ms / 1000)
    print(receiver.server.server_port, flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
