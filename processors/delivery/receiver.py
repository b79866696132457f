"""The webhook receiver: the one the tests, the benchmarks, the local stack, the compose stack
and the demo use.

asyncio (uvloop) with httptools parsing, keep-alive, so it is never the bottleneck of what it
measures (about 2,000 requests/s would cost a thread and an http.server parse each otherwise).

- `POST <any path>`: per-path behaviour (a `Route`: fail the first N calls, always answer a
  status, answer late, send Retry-After or other headers), then the Standard Webhooks signature
  is checked when the route has secrets (401 otherwise) and the call is answered 200. Each 200
  is a JSON line {"received_at", "path", "headers", "body"} in the `--out` file (what `make run`
  and the demo show); `body` is the parsed JSON, or the text when it is not JSON.
- `GET /stats` -> {"calls", "unique", "bad_signatures", "by_event", "cpu_s"};
  `GET /arrivals` -> {webhook_id: epoch ms of its first 200}; `GET /healthz` -> 200;
  `GET /received[?after=N]` -> the last `--recent` POSTs, whatever their answer, from index N:
  {"count", "requests": [{"index", "received_at", "path", "headers", "body", "status",
  "verified", "error"}]}, `body` the raw text (what the compose stack's test and its demo read);
  `GET <other path>` -> {path: {"calls", "unique"}}.

In a test: `Receiver()` serves on a thread of its own and keeps every request (`routes`,
`bodies`, `requests`); `python -m processors.delivery.receiver [--host H] [--port N]
[--out F.jsonl] [--secret S] [--delay-ms MS] [--recent N]` serves in its own process (it must
not share the GIL with what it measures) and prints its port on the first line, until SIGTERM;
`RemoteReceiver` starts that process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httptools
import httpx
import orjson
import uvloop

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
    unique: dict[str, Any] = field(default_factory=dict)  # webhook-id -> body of its first 200
    bad_signatures: int = 0


def _reply(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


OK = _reply(200)
UNAUTHORIZED = _reply(401)


def _json(payload: Any) -> bytes:
    return _reply(200, {"content-type": "application/json"}, orjson.dumps(payload))


class Receiver:
    """Serves on `host`:`port` (0 = any free port) from construction until `close()`.

    `keep` (the default in a test) remembers every request in `requests` and `Route.received`;
    the CLI keeps only counts, so a benchmark's million requests cost no memory. `recent` keeps
    the last that many POSTs, answered or refused, for `GET /received` (0: none).
    """

    def __init__(
        self,
        out: Path | None = None,
        port: int = 0,
        *,
        secrets: Sequence[str] = (),
        delay_s: float = 0.0,
        host: str = "127.0.0.1",
        keep: bool = True,
        recent: int = 0,
        background: bool = True,
    ) -> None:
        self.keep = keep
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent)
        self.posts = 0  # POSTs ever answered: /received indexes stay stable as old ones drop
        self.routes: defaultdict[str, Route] = defaultdict(
            lambda: Route(secret=list(secrets), delay_s=delay_s)
        )
        self.requests: list[dict[str, Any]] = []  # every 200 (keep=True)
        self.arrivals: dict[str, float] = {}
        self.by_event: dict[str, int] = {}  # unique webhooks per body "event" type
        self.calls = 0
        self.bad_signatures = 0
        self._out = out.open("a", buffering=1) if out else None
        self._connections: set[asyncio.Transport] = set()
        self.loop = uvloop.new_event_loop()
        self.server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _Connection(self), host, port, backlog=1024)
        )
        self.port: int = self.server.sockets[0].getsockname()[1]
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self.loop.run_forever, name="receiver", daemon=True)
            self._thread.start()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def bodies(self) -> list[Any]:
        return [r["body"] for r in list(self.requests)]

    # what a request does (on the receiver's event loop)

    def arrive(self, path: str, headers: dict[str, str], body: bytes) -> tuple[Route, int]:
        """Count the call (its number on the route decides `fail_first`) as it arrives."""
        route = self.routes[path]
        route.calls += 1
        self.calls += 1
        if self.keep:
            route.received.append((time.monotonic(), headers, body))
        return route, route.calls

    def answer(self, route: Route, call: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if route.always is not None or call <= route.fail_first:
            extra = dict(route.headers)
            if route.retry_after:
                extra["retry-after"] = route.retry_after
            status = route.always if route.always is not None else route.fail_status
            self._remember(path, headers, body, status, None)
            return _reply(status, extra)
        try:
            payload = verify(body, headers, route.secret) if route.secret else _parse(body)
        except (VerificationError, ValueError) as exc:  # ValueError: signed, but not JSON
            route.bad_signatures += 1
            self.bad_signatures += 1
            self._remember(path, headers, body, 401, str(exc))
            return UNAUTHORIZED
        self._remember(path, headers, body, 200, None, verified=bool(route.secret))
        webhook_id = headers.get("webhook-id", "")
        route.unique.setdefault(webhook_id, payload if self.keep else True)
        if webhook_id not in self.arrivals:
            self.arrivals[webhook_id] = time.time() * 1000
            kind = payload.get("event", "") if isinstance(payload, dict) else ""
            self.by_event[kind] = self.by_event.get(kind, 0) + 1
        if self.keep or self._out:
            entry = {
                "received_at": int(time.time() * 1000),
                "path": path,
                "headers": headers,
                "body": payload,
            }
            if self.keep:
                self.requests.append(entry)
            if self._out:
                self._out.write(orjson.dumps(entry).decode() + "\n")
        return OK

    def _remember(self, path: str, headers: dict[str, str], body: bytes, status: int,
                  error: str | None, verified: bool = False) -> None:  # fmt: skip
        """Keep the POST for `GET /received` (when `recent`): what a person or a test inspects."""
        self.posts += 1
        if self.recent.maxlen:
            self.recent.append({"index": self.posts - 1, "received_at": int(time.time() * 1000),
                                "path": path, "headers": headers, "body": body.decode(errors="replace"),
                                "status": status, "verified": verified, "error": error})  # fmt: skip

    def received(self, after: int = 0) -> dict[str, Any]:
        """The kept POSTs from index `after` on, and how many POSTs came in all."""
        return {"count": self.posts, "requests": [r for r in self.recent if r["index"] >= after]}

    def get(self, url: bytes) -> bytes:
        parts = urlsplit(url.decode())
        path = parts.path
        if path == "/healthz":
            return _json({"status": "ok"})
        if path == "/received":
            return self._received(parts.query)
        if path == "/arrivals":
            return _json(self.arrivals)
        if path == "/stats":
            cpu = os.times()
            unique, bad = len(self.arrivals), self.bad_signatures
            return _json({"calls": self.calls, "unique": unique, "bad_signatures": bad,
                          "by_event": self.by_event, "cpu_s": cpu.user + cpu.system})  # fmt: skip
        return _json(self.stats())

    def _received(self, query: str) -> bytes:
        after = parse_qs(query).get("after", ["0"])[0]
        if not after.isdigit():
            return _reply(400, {"content-type": "application/json"},
                          orjson.dumps({"error": "after: a request index (0 or more)"}))  # fmt: skip
        return _json(self.received(int(after)))

    def stats(self) -> dict[str, dict[str, int]]:
        """Per path: calls and unique webhook ids answered 200."""
        return {p: {"calls": r.calls, "unique": len(r.unique)} for p, r in list(self.routes.items())}

    # lifecycle

    def serve_forever(self) -> None:
        """Serve on this thread (the CLI) until SIGTERM (a container's stop) or the loop stops."""
        self.loop.add_signal_handler(signal.SIGTERM, self.loop.stop)
        self.loop.run_forever()

    def close(self) -> None:
        def stop() -> None:
            self.server.close()
            for transport in list(self._connections):
                transport.close()
            self.loop.stop()

        if self._thread:
            self.loop.call_soon_threadsafe(stop)
            self._thread.join(10)
        if not self.loop.is_closed():
            self.loop.close()
        if self._out:
            self._out.close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")


class _Connection(asyncio.Protocol):
    """One keep-alive connection: httptools calls back as it parses."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.receiver._connections.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.receiver._connections.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        receiver, keep_alive = self.receiver, self.parser.should_keep_alive()
        if self.parser.get_method() == b"GET":
            return self._send(receiver.get(self.url), keep_alive)
        path = urlsplit(self.url.decode()).path or "/"
        headers, body = self.headers, b"".join(self.body)
        route, call = receiver.arrive(path, headers, body)
        if route.delay_s:  # answer late without holding up other connections
            late = self._late(route, call, path, headers, body, keep_alive)
            asyncio.get_running_loop().create_task(late)
        else:
            self._send(receiver.answer(route, call, path, headers, body), keep_alive)

    async def _late(self, route: Route, call: int, path: str, headers: dict[str, str], body: bytes,
                    keep_alive: bool) -> None:  # fmt: skip
        await asyncio.sleep(route.delay_s)
        self._send(self.receiver.answer(route, call, path, headers, body), keep_alive)

    def _send(self, reply: bytes, keep_alive: bool) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(reply)
        if not keep_alive:
            self.transport.close()


class RemoteReceiver:
    """The receiver in a child process (it must not share the GIL with what it measures)."""

    def __init__(self, secrets: Sequence[str] = (), delay_ms: float = 0.0, timeout: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "processors.delivery.receiver", "--delay-ms", str(delay_ms)]
        for secret in secrets:
            cmd += ["--secret", secret]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.strip():
            self.close()
            raise RuntimeError(f"the webhook receiver printed no port in {timeout:g} s")
        self.port = int(line)
        self.http = httpx.Client(timeout=30)  # one client: a new one per poll costs an SSL context

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stats(self) -> dict[str, Any]:
        return self.http.get(self.url("/stats")).json()

    def arrivals(self) -> dict[str, float]:
        return orjson.loads(self.http.get(self.url("/arrivals")).content)

    def close(self) -> None:
        if hasattr(self, "http"):
            self.http.close()
        self.proc.kill()
        self.proc.wait(30)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m processors.delivery.receiver", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 in a container")
    parser.add_argument("--out", type=Path, help="append each webhook answered 200 as a JSON line")
    parser.add_argument("--secret", action="append", default=[], help="verify with these secrets")
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="answer each POST this late (a slow receiver)"
    )
    parser.add_argument("--recent", type=int, default=0, metavar="N",
                        help="list the last N POSTs at GET /received (default 0: none)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.recent < 0:
        parser.error("--recent: 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    receiver = Receiver(args.out, args.port, secrets=args.secret, delay_s=args.delay_ms / 1000,
                        host=args.host, keep=False, recent=args.recent, background=False)  # fmt: skip
    print(receiver.port, flush=True)
    print(f"receiver listening on {receiver.url()}" + (f", writing {args.out}" if args.out else ""),
          file=sys.stderr, flush=True)  # fmt: skip
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
