"""Standard Webhooks signing and receiver-side verification (stdlib only: copy it freely).

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the signature header holds one or
more space-separated `v1,<base64 HMAC-SHA256>` entries (several while a secret is rotated), so a
receiver accepts the message if any entry matches any of its secrets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300


class VerificationError(ValueError):
    """The message is not authentic or too old/new to be trusted (reject with 400/401)."""


def secret_bytes(secret: str) -> bytes:
    """`whsec_<base64>` secrets are base64-decoded; any other string is used as raw bytes."""
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret[len(SECRET_PREFIX) :])
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature entry."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one entry per secret, space-separated."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets if s)


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secrets: str | Iterable[str],
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """Check the signature and timestamp of a webhook; return the decoded JSON body.

    Raises VerificationError. De-duplicate on the `webhook-id` header after this succeeds.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sig = (lower.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not msg_id or not ts or not sig:
        raise VerificationError("missing webhook headers")
    try:
        timestamp = int(ts)
    except ValueError:
        raise VerificationError("bad webhook-timestamp") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise VerificationError("webhook-timestamp outside tolerance")
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    expected = [sign(k, msg_id, timestamp, body).split(",", 1)[1] for k in keys]
    for entry in sig.split():
        version, _, value = entry.partition(",")
        if version == "v1" and any(hmac.compare_digest(value, e) for e in expected):
            return json.loads(body)
    raise VerificationError("no matching signature")
