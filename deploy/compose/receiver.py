"""The compose stack's demo webhook receiver: checks each webhook's Standard Webhooks signature
and keeps what it received, for people and for tests to look at over HTTP.

- `POST <any path>`: verified with WEBHOOK_SECRET (comma-separated secrets; none set = accept
  unsigned); 200 when authentic, 401 otherwise (the delivery processor then retries). Every
  request is kept, authentic or not, with its raw body and headers.
- `GET /received[?after=N]`: the requests kept (from index N): `{"count", "requests": [{"index",
  "received_at", "path", "headers", "body", "verified", "error"}]}`; `body` is the raw text.
- `GET /healthz`: 200.

It listens on 0.0.0.0:RECEIVER_PORT (default 8080) and keeps at most RECEIVER_KEEP requests
(default 200000) in memory; a restart forgets them.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from processors.delivery.verify import VerificationError, verify


class Store:
    def __init__(self, secrets: list[str], keep: int) -> None:
        self.secrets = secrets
        self.lock = threading.Lock()
        self.requests: deque[dict[str, Any]] = deque(maxlen=keep)
        self.count = 0  # requests ever received (indexes stay stable when old ones drop)

    def receive(self, path: str, headers: dict[str, str], body: bytes) -> bool:
        error = None
        if self.secrets:
            try:
                verify(body, headers, self.secrets)
            except (VerificationError, ValueError) as exc:
                error = str(exc)
        entry = {"received_at": int(time.time() * 1000), "path": path, "headers": headers}
        entry |= {"body": body.decode(errors="replace"), "verified": bool(self.secrets) and not error}
        entry["error"] = error
        with self.lock:
            entry["index"] = self.count
            self.count += 1
            self.requests.append(entry)
        return error is None

    def since(self, after: int) -> dict[str, Any]:
        with self.lock:
            return {"count": self.count, "requests": [r for r in self.requests if r["index"] >= after]}


def handler(store: Store) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            ok = store.receive(self.path, dict(self.headers.items()), body)
            self._reply(200 if ok else 401, {"ok": ok})

        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            if url.path == "/healthz":
                self._reply(200, {"status": "ok"})
            elif url.path == "/received":
                after = int(parse_qs(url.query).get("after", ["0"])[0])
                self._reply(200, store.since(after))
            else:
                self._reply(404, {"error": "GET /received or /healthz"})

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # bursts of new connections from delivery's lanes


def main() -> int:
    secrets = [s for s in os.environ.get("WEBHOOK_SECRET", "").split(",") if s]
    store = Store(secrets, int(os.environ.get("RECEIVER_KEEP", "200000")))
    port = int(os.environ.get("RECEIVER_PORT", "8080"))
    server = Server((os.environ.get("RECEIVER_HOST", "0.0.0.0"), port), handler(store))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"msg": "receiver listening", "port": port, "verifies": bool(secrets)}), flush=True)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
