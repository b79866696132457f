"""SSRF guard for endpoint URLs: HTTPS only (plain HTTP for allow-listed hosts), and the
resolved addresses must be public unless private targets are allowed.

The check resolves the host itself, so a public name pointing at 10.x or 169.254.169.254 is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from urllib.parse import urlsplit

from schemas.program import Delivery

CACHE_S = 60.0


class RefusedTarget(ValueError):
    """The URL must not be called (scheme or address policy)."""


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class UrlGuard:
    """Checks URLs against a Delivery policy; caches positive DNS checks briefly."""

    def __init__(self) -> None:
        self._ok: dict[tuple[str, str], float] = {}

    async def check(self, url: str, policy: Delivery) -> None:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if not host:
            raise RefusedTarget(f"no host in {url!r}")
        allowed_host = host in {h.lower() for h in policy.allow_http_hosts}
        if parts.scheme == "http" and not allowed_host:
            raise RefusedTarget(f"plain http not allowed for {host}")
        if parts.scheme not in ("http", "https"):
            raise RefusedTarget(f"scheme {parts.scheme!r} not allowed")
        if allowed_host or policy.allow_private:
            return
        key = (host, str(parts.port))
        if self._ok.get(key, 0) > time.monotonic():
            return
        for address in await _resolve(host, parts.port or 443):
            if not _public(address):
                raise RefusedTarget(f"{host} resolves to non-public address {address}")
        self._ok[key] = time.monotonic() + CACHE_S


async def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise RefusedTarget(f"cannot resolve {host}: {exc}") from None
    return sorted({info[4][0] for info in infos})
