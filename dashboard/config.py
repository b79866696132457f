"""Dashboard options from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ingest.config import DEV_API_KEY, parse_api_keys

DEFAULT_PORT = 18090


def admin_keys(spec: str | None) -> tuple[str, ...]:
    """The keys with the admin scope in INGEST_API_KEYS (the same keys as ingest's admin API);
    unset means ingest's development key, as for ingest."""
    if not spec:
        return (DEV_API_KEY,)
    return tuple(key for key, scopes in parse_api_keys(spec).items() if "admin" in scopes)


@dataclass(frozen=True)
class DashboardConfig:
    """Every field has an environment variable (docs/dashboard.md)."""

    database_url: str = "postgresql://localhost/loyalty"
    admin_keys: tuple[str, ...] = field(default_factory=lambda: (DEV_API_KEY,))
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    refresh_s: float = 10.0  # how often a page re-fetches its data
    cache_s: float = 5.0  # page data is shared by every viewer for this long
    pool_min: int = 1
    pool_max: int = 4
    statement_timeout_ms: int = 15000
    secure_cookie: bool = False  # set behind HTTPS
    rollups: bool = True  # keep the hourly rollups and the segment snapshot (dashboard.rollups)
    rollup_s: float = 60.0
    segments_s: float = 300.0

    @classmethod
    def from_env(cls) -> DashboardConfig:
        env = os.environ.get
        return cls(
            database_url=env("DATABASE_URL", cls.database_url),
            admin_keys=admin_keys(env("INGEST_API_KEYS")),
            host=env("LOYALTY_DASHBOARD_HOST", cls.host),
            port=int(env("LOYALTY_DASHBOARD_PORT", cls.port)),
            refresh_s=float(env("DASHBOARD_REFRESH_S", cls.refresh_s)),
            cache_s=float(env("DASHBOARD_CACHE_S", cls.cache_s)),
            pool_min=int(env("DASHBOARD_POOL_MIN", cls.pool_min)),
            pool_max=int(env("DASHBOARD_POOL_MAX", cls.pool_max)),
            statement_timeout_ms=int(env("DASHBOARD_STATEMENT_TIMEOUT_MS", cls.statement_timeout_ms)),
            secure_cookie=env("DASHBOARD_SECURE_COOKIE", "") in ("1", "true", "yes"),
            rollups=env("DASHBOARD_ROLLUPS", "1") not in ("0", "false", "no"),
            rollup_s=float(env("DASHBOARD_ROLLUP_S", cls.rollup_s)),
            segments_s=float(env("DASHBOARD_SEGMENTS_S", cls.segments_s)),
        )
