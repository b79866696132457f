"""Ingest options from the environment: API keys, limits, rate limiting and timeouts."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

# Development default, used only when INGEST_API_KEYS is unset (documented in docs/ingest.md).
DEV_API_KEY = "dev-key"
SCOPES = ("ingest", "admin", "adjust")  # adjust: direct points; admin does not imply it


def _entries(spec: str) -> list[tuple[str, str, str]]:
    """(name, key, scopes) of each "name@key:scopes" entry; the name is optional."""
    out = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        named, _, scopes = item.partition(":")
        name, at, key = named.rpartition("@")
        out.append((name if at else "", key, scopes))
    return out


def key_fingerprint(key: str) -> str:
    """The name of a key configured without one: never the key itself (it is a credential)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def parse_api_key_names(spec: str) -> dict[str, str]:
    """{key: name} for "ops@key:admin" entries (audit entries and versions say who, by name)."""
    return {key: name for name, key, _ in _entries(spec) if name}


def parse_api_keys(spec: str) -> dict[str, frozenset[str]]:
    """Parse "key1:ingest,key2:admin,ops@key3:ingest+admin" into {key: scopes}."""
    keys: dict[str, frozenset[str]] = {}
    for _, key, scopes in _entries(spec):
        item = f"{key}:{scopes}"
        wanted = frozenset(s for s in scopes.split("+") if s) or frozenset({"ingest"})
        unknown = wanted - set(SCOPES)
        if not key or unknown:
            raise ValueError(f"bad INGEST_API_KEYS entry {item!r}")
        keys[key] = wanted
    return keys


@dataclass(frozen=True)
class IngestConfig:
    """Tunables of one ingest instance; every field has an INGEST_* environment variable."""

    api_keys: dict[str, frozenset[str]] = field(default_factory=lambda: {DEV_API_KEY: frozenset(SCOPES)})
    max_body_bytes: int = 1024 * 1024
    max_bulk_body_bytes: int = 5 * 1024 * 1024
    max_bulk_events: int = 1000
    rate_limit_per_s: float = 5000.0  # token bucket refill, per key and worker; 0 disables
    rate_limit_burst: int = 10000
    ack_timeout_s: float = 5.0  # Kafka must acknowledge within this, else 503
    wait_timeout_s: float = 5.0  # default ?wait=true timeout
    max_wait_timeout_s: float = 30.0
    max_event_age_s: float = 72 * 3600
    clock_skew_s: float = 300.0
    retry_after_s: int = 1
    linger_ms: int = 5  # producer batching delay: latency floor vs CPU per event (docs/ingest.md)
    api_key_names: dict[str, str] = field(default_factory=lambda: {DEV_API_KEY: "dev"})

    @property
    def poll_tick_s(self) -> float:
        """How often the worker's loop polls the producer while sends are in flight: half the
        linger (no ack comes sooner), at least 1 ms. Each poll is a loop wake-up of its own."""
        return max(0.001, self.linger_ms / 2000)

    def key_name(self, key: str) -> str:
        return self.api_key_names.get(key) or key_fingerprint(key)

    @classmethod
    def from_env(cls) -> IngestConfig:
        env = os.environ.get
        keys = env("INGEST_API_KEYS")
        return cls(
            api_keys=parse_api_keys(keys) if keys else {DEV_API_KEY: frozenset(SCOPES)},
            api_key_names=parse_api_key_names(keys) if keys else {DEV_API_KEY: "dev"},
            max_body_bytes=int(env("INGEST_MAX_BODY_BYTES", cls.max_body_bytes)),
            max_bulk_body_bytes=int(env("INGEST_MAX_BULK_BODY_BYTES", cls.max_bulk_body_bytes)),
            max_bulk_events=int(env("INGEST_MAX_BULK_EVENTS", cls.max_bulk_events)),
            rate_limit_per_s=float(env("INGEST_RATE_LIMIT", cls.rate_limit_per_s)),
            rate_limit_burst=int(env("INGEST_RATE_BURST", cls.rate_limit_burst)),
            ack_timeout_s=float(env("INGEST_ACK_TIMEOUT_S", cls.ack_timeout_s)),
            wait_timeout_s=float(env("INGEST_WAIT_TIMEOUT_S", cls.wait_timeout_s)),
            max_wait_timeout_s=float(env("INGEST_MAX_WAIT_TIMEOUT_S", cls.max_wait_timeout_s)),
            max_event_age_s=float(env("INGEST_MAX_EVENT_AGE_S", cls.max_event_age_s)),
            clock_skew_s=float(env("INGEST_CLOCK_SKEW_S", cls.clock_skew_s)),
            linger_ms=int(env("INGEST_LINGER_MS", cls.linger_ms)),
        )
