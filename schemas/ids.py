"""Deterministic ids shared by every service."""

from __future__ import annotations

import hashlib
import uuid

_NAMESPACE = uuid.NAMESPACE_URL.bytes


def name_uuid(name: str) -> str:
    """str(uuid.uuid5(uuid.NAMESPACE_URL, name)), computed without building UUID objects: it runs
    several times per event on hot paths, and the same name must always give the same id."""
    digest = bytearray(hashlib.sha1(_NAMESPACE + name.encode("utf-8", "surrogatepass")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
