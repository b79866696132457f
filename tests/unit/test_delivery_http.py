"""Both webhook clients behave alike against a real local server: what was sent arrives intact,
redirects are answered not followed, headers are read case-insensitively, and no answer is a
TransportError naming its cause."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from processors.delivery.http import AiohttpClient, HttpxClient, Reply, TransportError
from processors.delivery.receiver import Receiver, Route

BODY = b'{"event":"E","data":{"points":10}}'
HEADERS = {"content-type": "application/json", "webhook-id": "msg-1", "user-agent": "loyalty-webhooks/1"}


def _post(kind: str, url: str, timeout: float = 5.0) -> Reply:
    async def go() -> Reply:
        client = AiohttpClient() if kind == "aiohttp" else HttpxClient(httpx.AsyncClient())
        try:
            return await client.post(url, BODY, HEADERS, timeout)
        finally:
            await client.close()

    return asyncio.run(go())


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
def test_the_request_arrives_as_sent(receiver: Receiver, kind: str) -> None:
    reply = _post(kind, receiver.url("/ok"))
    assert reply.status == 200
    ((_, headers, body),) = receiver.routes["/ok"].received
    lower = {k.lower(): v for k, v in headers.items()}
    assert body == BODY
    assert {k: lower[k] for k in HEADERS} == HEADERS


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
def test_a_redirect_is_answered_not_followed(receiver: Receiver, kind: str) -> None:
    receiver.routes["/moved"] = Route(always=302, headers={"Location": receiver.url("/elsewhere")})
    reply = _post(kind, receiver.url("/moved"))
    assert reply.status == 302 and reply.headers.get("location") == receiver.url("/elsewhere")
    assert receiver.routes["/elsewhere"].calls == 0


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
def test_retry_after_is_readable(receiver: Receiver, kind: str) -> None:
    receiver.routes["/busy"] = Route(always=429, retry_after="7")
    reply = _post(kind, receiver.url("/busy"))
    assert (reply.status, reply.headers.get("Retry-After")) == (429, "7")


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
def test_no_answer_is_a_transport_error(kind: str) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransportError, match=r"^\w*Connect\w*Error: "):
        _post(kind, f"http://127.0.0.1:{port}/")


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
def test_a_slow_answer_times_out_as_a_transport_error(receiver: Receiver, kind: str) -> None:
    receiver.routes["/slow"] = Route(delay_s=2.0)
    with pytest.raises(TransportError):
        _post(kind, receiver.url("/slow"), timeout=0.2)


def test_the_proxy_comes_from_the_environment_once_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "hooks.local")

    async def go() -> list[str | None]:
        client = AiohttpClient()
        try:
            urls = ["https://hooks.example/a", "https://hooks.local/b", "http://plain.example/c"]
            return [client.proxy_for(u) for u in urls]
        finally:
            await client.close()

    assert asyncio.run(go()) == ["http://proxy.internal:3128", None, None]
