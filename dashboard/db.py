"""The connection pool and a short-lived cache of page data shared by every viewer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from dashboard.config import DashboardConfig
from schemas.settings import libpq_url


def make_pool(config: DashboardConfig) -> ConnectionPool:
    """A pool that opens lazily (the service starts while the database is down: /readyz says so).

    Read-only, autocommit sessions in UTC with a statement timeout, so a slow page can never hold
    locks or a connection for long."""
    options = f"-c statement_timeout={config.statement_timeout_ms} -c TimeZone=UTC"
    options += " -c default_transaction_read_only=on"
    return ConnectionPool(
        libpq_url(config.database_url),
        min_size=config.pool_min,
        max_size=config.pool_max,
        kwargs={"autocommit": True, "row_factory": dict_row, "options": options, "connect_timeout": 5},
        open=False,
        name="dashboard",
    )


class TtlCache:
    """(key) -> value for `ttl` seconds; concurrent misses of one key compute it once."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._values: dict[Any, tuple[float, Any]] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: Any, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """(value, hit)."""
        hit = self._fresh(key)
        if hit is not None:
            return hit, True
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            hit = self._fresh(key)
            if hit is not None:
                return hit, True
            value = compute()
            if self.ttl > 0:
                self._values[key] = (time.monotonic() + self.ttl, value)
            return value, False

    def _fresh(self, key: Any) -> Any:
        found = self._values.get(key)
        return found[1] if found and found[0] > time.monotonic() else None
