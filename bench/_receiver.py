"""A webhook receiver for the benchmarks that is never their bottleneck: asyncio (uvloop) with
httptools parsing, in its own process, keep-alive, signature checked on every request.

    python -m bench._receiver [--secret whsec_...]      # prints its port, then serves

POST any path: verify the Standard Webhooks signature (when secrets are given), remember the
first arrival time of each `webhook-id`, answer 200. GET /stats -> {"calls", "unique",
"bad_signatures", "by_event", "cpu_s"}; GET /arrivals -> {webhook_id: epoch ms of first arrival}.
The stdlib receivers (deploy/local/receiver.py, processors/delivery/receiver.py) spend a thread
and an http.server parse per request, which at 2,000 requests/s costs more CPU than the
delivery service they measure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import httptools
import httpx
import orjson
import uvloop

from bench._child import read_line
from processors.delivery.verify import VerificationError, verify

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
UNAUTHORIZED = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n"


class Tally:
    """What every connection records into (one event loop: no locks)."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets
        self.calls = 0
        self.bad_signatures = 0
        self.arrivals: dict[str, float] = {}
        self.by_event: dict[str, int] = {}  # unique webhooks per body "event" type

    def post(self, headers: dict[str, str], body: bytes) -> bytes:
        self.calls += 1
        at = time.time() * 1000
        try:
            payload = verify(body, headers, self.secrets) if self.secrets else orjson.loads(body)
        except VerificationError:
            self.bad_signatures += 1
            return UNAUTHORIZED
        webhook_id = headers.get("webhook-id", "")
        if webhook_id not in self.arrivals:
            self.arrivals[webhook_id] = at
            kind = payload.get("event", "") if isinstance(payload, dict) else ""
            self.by_event[kind] = self.by_event.get(kind, 0) + 1
        return OK

    def get(self, url: bytes) -> bytes:
        if url.startswith(b"/arrivals"):
            payload = orjson.dumps(self.arrivals)
        else:
            cpu = os.times()
            payload = orjson.dumps(
                {
                    "calls": self.calls,
                    "unique": len(self.arrivals),
                    "bad_signatures": self.bad_signatures,
                    "by_event": self.by_event,
                    "cpu_s": cpu.user + cpu.system,
                }
            )
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
        return head.encode() + payload


class Connection(asyncio.Protocol):
    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.parser.get_method() == b"POST":
            reply = self.tally.post(self.headers, b"".join(self.body))
        else:
            reply = self.tally.get(self.url)
        self.transport.write(reply)


async def serve(secrets: list[str], port: int) -> None:
    tally = Tally(secrets)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(tally), "127.0.0.1", port, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


class RemoteReceiver:
    """This receiver in a child process (it must not share the GIL with what it measures)."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        cmd = [sys.executable, "-m", "bench._receiver"]
        for secret in secrets or []:
            cmd += ["--secret", secret]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.port = int(read_line(self.proc, 60, "the webhook receiver"))
        self.http = httpx.Client(timeout=30)  # one client: a new one per poll costs an SSL context

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stats(self) -> dict[str, Any]:
        return self.http.get(self.url("/stats")).json()

    def arrivals(self) -> dict[str, float]:
        return orjson.loads(self.http.get(self.url("/arrivals")).content)

    def close(self) -> None:
        self.http.close()
        self.proc.kill()
        self.proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._receiver", description=__doc__)
    parser.add_argument("--secret", action="append", default=[], help="verify with these secrets")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.secret, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
