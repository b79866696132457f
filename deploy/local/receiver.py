"""A tiny webhook receiver for the demo and the tests: answers 200 and records every body.

Each POST becomes one JSON line {"received_at", "path", "headers", "body"} in the output file,
so `make run` can show what the delivery processor sent. Stdlib only: it must start instantly.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Receiver:
    """Serve on 127.0.0.1:`port` (0 = any free port); bodies go to `out` and `self.bodies`."""

    def __init__(self, out: Path | None = None, port: int = 0) -> None:
        self.out = out
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def bodies(self) -> list[Any]:
        with self._lock:
            return [r["body"] for r in self.requests]

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
            if self.out:
                with self.out.open("a") as fh:
                    fh.write(json.dumps(entry) + "\n")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                entry = {"received_at": int(time.time() * 1000), "path": self.path}
                entry |= {"headers": dict(self.headers.items()), "body": body}
                receiver.record(entry)
                self._reply(200, b'{"ok":true}')

            def do_GET(self) -> None:  # noqa: N802
                self._reply(200, b'{"status":"ok"}')

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        return Handler

    def start(self) -> Receiver:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="receiver", description=__doc__)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--out", type=Path, default=Path(".local/receiver.jsonl"))
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    receiver = Receiver(args.out, args.port)
    print(f"receiver listening on {receiver.url}, writing {args.out}", flush=True)
    try:
        receiver.server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
