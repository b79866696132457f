"""Reads from the sink tables (events, wallets) owned by sinks/: never on the hot path.

Used for GET /behavior/events/{id}, GET /customers/{id}/wallet and to find the customer of an
event for fulfil/cancel/reverse. `Lookup` is the seam tests replace.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row

from schemas.settings import libpq_url

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """PostgreSQL could not be reached (answer 503)."""


class Lookup(Protocol):
    async def event(self, event_id: str) -> dict[str, Any] | None: ...

    async def wallet(self, customer_id: str) -> dict[str, Any] | None: ...

    async def open_lines(self, customer_id: str) -> list[dict[str, Any]]: ...


EVENT_SQL = """
SELECT id, customer_id, type, kind, path, reference, status, reason, points, result,
       properties, issued_at, received_at, processed_at, config_version
FROM events WHERE id = %s
"""
WALLET_SQL = """
SELECT customer_id, points, lifetime, pending, balance, wallet, tier, updated_at
FROM wallets WHERE customer_id = %s
"""
# the current state of each open line (the sink's wallet_lines: amount = what is left)
OPEN_LINES_SQL = """
SELECT line FROM wallet_lines WHERE customer_id = %s AND amount <> 0
ORDER BY expiration_date NULLS LAST, issued_at, id
"""


class PgLookup:
    """One short connection per lookup: simple, and fine for these low-rate reads."""

    def __init__(self, database_url: str, timeout_s: int = 3) -> None:
        self.url = libpq_url(database_url)
        self.timeout_s = timeout_s

    async def _one(self, sql: str, key: str) -> dict[str, Any] | None:
        rows = await self._all(sql, key)
        return rows[0] if rows else None

    async def _all(self, sql: str, key: str) -> list[dict[str, Any]]:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, connect_timeout=self.timeout_s, row_factory=dict_row, autocommit=True
            )
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from None
        try:
            async with conn:
                rows = await (await conn.execute(sql, (key,))).fetchall()
        except psycopg.errors.UndefinedTable:
            return []  # sinks not migrated yet: nothing has been stored
        except psycopg.DataError:
            return []  # a key PostgreSQL cannot even compare (e.g. a NUL) names no row: 404
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from None
        return [_jsonable(row) for row in rows]

    async def event(self, event_id: str) -> dict[str, Any] | None:
        return await self._one(EVENT_SQL, event_id)

    async def wallet(self, customer_id: str) -> dict[str, Any] | None:
        return await self._one(WALLET_SQL, customer_id)

    async def open_lines(self, customer_id: str) -> list[dict[str, Any]]:
        return [row["line"] for row in await self._all(OPEN_LINES_SQL, customer_id)]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
