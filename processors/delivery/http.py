"""The HTTP client delivery posts webhooks with, behind a two-method interface.

aiohttp, chosen by measuring candidates side by side (`python -m bench.delivery`, same signed
requests to the same receiver in one run): httpx spent 680-807 us of CPU per request, aiohttp
107-123 us (docs/benchmarks.md#delivery). HttpxClient keeps httpx usable where its
MockTransport is handy (the sender's unit tests).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
import httpx


class TransportError(Exception):
    """No HTTP answer (refused, reset, timed out): a retryable attempt. The message names the
    underlying error's type first ("ClientConnectorError: ...")."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # case-insensitive lookups


class HttpClient(Protocol):
    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Reply: ...

    async def close(self) -> None: ...


def _failure(exc: BaseException) -> TransportError:
    return TransportError(f"{type(exc).__name__}: {exc}"[:500])


class AiohttpClient:
    """Keep-alive connections without a pool limit (each lane bounds its own concurrency), no
    redirects (sender.py), no cookie jar (a receiver's cookies are never sent back).

    HTTP(S)_PROXY / NO_PROXY are honoured as httpx did, read once per scheme and host: aiohttp's
    own trust_env re-reads them, and ~/.netrc, in a worker thread on every request."""

    def __init__(self) -> None:  # inside the running loop: the session belongs to it
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._env_proxies = urllib.request.getproxies()
        self._proxies: dict[tuple[str, str], str | None] = {}

    def proxy_for(self, url: str) -> str | None:
        """The environment's proxy for this URL's scheme and host, None for a direct call."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "")
        if key not in self._proxies:
            proxy = self._env_proxies.get(parts.scheme)
            if proxy and urllib.request.proxy_bypass(parts.netloc):
                proxy = None
            self._proxies[key] = proxy
        return self._proxies[key]

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Reply:
        try:
            async with self.session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                proxy=self.proxy_for(url),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                await resp.read()  # the connection goes back to the pool only once drained
                return Reply(resp.status, resp.headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _failure(exc) from exc

    async def close(self) -> None:
        await self.session.close()


class HttpxClient:
    """An httpx.AsyncClient behind the same interface."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Reply:
        try:
            resp = await self.client.post(url, content=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise _failure(exc) from exc
        return Reply(resp.status_code, resp.headers)

    async def close(self) -> None:
        await self.client.aclose()
