"""Reads from the sink tables owned by sinks/: never on the hot path.

Used for GET /behavior/events/{id}, the customer endpoints (wallet, customer object, history:
ingest/customer_history.py), the leaderboards (ingest/leaderboards.py) and to find the customer
of an event for fulfil/cancel/reverse.
`Lookup` is the seam tests replace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ingest import customer_history as h
from ingest import leaderboards as lb
from schemas.settings import libpq_url

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """PostgreSQL could not be reached (answer 503)."""


class Lookup(Protocol):
    async def event(self, event_id: str) -> dict[str, Any] | None: ...

    async def wallet(self, customer_id: str) -> dict[str, Any] | None: ...

    async def open_lines(self, customer_id: str) -> list[dict[str, Any]]: ...

    async def customer(self, customer_id: str) -> dict[str, Any] | None: ...

    async def history(
        self, kind: str, customer_id: str, page: h.Page
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of `kind` (events, ledger, tiers), newest first, and the next page's cursor."""
        ...

    async def badges(self, customer_id: str, revoked: bool = False) -> list[dict[str, Any]]:
        """The customer's badges (customer_badges), latest award first; `revoked`: also those
        no longer held (count 0)."""
        ...

    async def leaderboard_top(self, board_id: str, period: date, limit: int) -> list[dict[str, Any]]:
        """The board's first `limit` eligible customers of the period, ranked."""
        ...

    async def leaderboard_entry(self, board_id: str, period: date, customer_id: str) -> dict[str, Any] | None:
        """{score, rank} of an eligible customer on the board, else None."""
        ...


EVENT_SQL = """
SELECT id, customer_id, type, kind, path, reference, status, reason, points, result,
       properties, fulfilled, issued_at, received_at, processed_at, config_version
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
BADGES_SQL = """
SELECT badge_id, badge_name, count, first_awarded_at, awarded_at, revoked_at, trigger_event_id,
       trigger_event_type, achievement_id, campaign_id
FROM customer_badges WHERE customer_id = %(customer_id)s AND (count > 0 OR %(revoked)s)
ORDER BY awarded_at DESC NULLS LAST, badge_id
"""
Shape = Callable[[dict[str, Any]], dict[str, Any]]
# kind -> (the page's SQL, the row's time column for the cursor, the row as the API shows it)
HISTORY: dict[str, tuple[Callable[[h.Page], tuple[str, dict[str, Any]]], str, Shape]] = {
    "events": (h.events_sql, "issued_at", lambda row: row),
    "ledger": (h.ledger_sql, "issued_at", lambda row: {**row, "why": h.why(row)}),
    "tiers": (h.tiers_sql, "changed_at", h.tier_change),
}


class PgLookup:
    """Reads through a small connection pool (psycopg_pool) once `open` ran in the serving event
    loop (the app's lifespan does it): a connection per read cost a TCP + auth round trip
    (several ms) per request. Without `open` (a script, a test) each read has its own short
    connection, as before."""

    def __init__(self, database_url: str, timeout_s: int = 3, max_size: int = 8) -> None:
        self.url = libpq_url(database_url)
        self.timeout_s = timeout_s
        self.max_size = max_size
        self._pool: AsyncConnectionPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        """Start the pool without waiting for a connection: an unreachable server is a 503 on
        the first read after `timeout_s`, not a worker that cannot start."""
        kwargs = {"row_factory": dict_row, "autocommit": True, "connect_timeout": self.timeout_s}
        pool = AsyncConnectionPool(self.url, min_size=1, max_size=self.max_size, kwargs=kwargs,
                                   timeout=self.timeout_s, open=False)  # fmt: skip
        await pool.open()
        self._pool, self._loop = pool, asyncio.get_running_loop()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        if self._pool is not None and self._loop is asyncio.get_running_loop():
            async with self._pool.connection() as conn:
                yield conn
            return
        conn = await psycopg.AsyncConnection.connect(
            self.url, connect_timeout=self.timeout_s, row_factory=dict_row, autocommit=True
        )
        async with conn:
            yield conn

    async def _rows(self, sql: str, args: tuple | dict[str, Any]) -> list[dict[str, Any]]:
        try:
            async with self._connection() as conn:
                return await (await conn.execute(sql, args)).fetchall()
        except psycopg.errors.UndefinedTable:
            return []  # sinks not migrated yet: nothing has been stored
        except psycopg.DataError:
            return []  # a key PostgreSQL cannot even compare (e.g. a NUL) names no row: 404
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(str(exc)) from None

    async def _all(self, sql: str, key: str | dict[str, Any]) -> list[dict[str, Any]]:
        args = (key,) if isinstance(key, str) else key
        return [_jsonable(row) for row in await self._rows(sql, args)]

    async def _one(self, sql: str, key: str) -> dict[str, Any] | None:
        rows = await self._all(sql, key)
        return rows[0] if rows else None

    async def event(self, event_id: str) -> dict[str, Any] | None:
        return await self._one(EVENT_SQL, event_id)

    async def wallet(self, customer_id: str) -> dict[str, Any] | None:
        return await self._one(WALLET_SQL, customer_id)

    async def open_lines(self, customer_id: str) -> list[dict[str, Any]]:
        return [row["line"] for row in await self._all(OPEN_LINES_SQL, customer_id)]

    async def customer(self, customer_id: str) -> dict[str, Any] | None:
        rows = await self._all(h.CUSTOMER_SQL, {"customer_id": customer_id})
        if not rows:
            return None
        lines = await self.open_lines(customer_id) if rows[0].get("wallet_id") is not None else []
        return h.customer_object(customer_id, rows[0], lines)

    async def history(
        self, kind: str, customer_id: str, page: h.Page
    ) -> tuple[list[dict[str, Any]], str | None]:
        build, time_column, shape = HISTORY[kind]
        sql, args = build(page)
        rows = await self._rows(sql, {**args, "customer_id": customer_id})
        more = len(rows) > page.limit
        rows = rows[: page.limit]
        cursor = h.encode_cursor(rows[-1][time_column], rows[-1]["id"]) if more else None
        return [shape(_jsonable(row)) for row in rows], cursor

    async def leaderboard_top(self, board_id: str, period: date, limit: int) -> list[dict[str, Any]]:
        args = {"board": board_id, "period": period, "limit": limit}
        return lb.ranked(await self._rows(lb.TOP_SQL, args))

    async def leaderboard_entry(self, board_id: str, period: date, customer_id: str) -> dict[str, Any] | None:
        args = {"board": board_id, "period": period, "customer": customer_id}
        rows = await self._rows(lb.RANK_SQL, args)
        return rows[0] if rows else None

    async def badges(self, customer_id: str, revoked: bool = False) -> list[dict[str, Any]]:
        rows = await self._rows(BADGES_SQL, {"customer_id": customer_id, "revoked": revoked})
        return [_jsonable(row) for row in rows]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


async def aopen(lookup: Lookup) -> None:
    """Open a lookup's pool in the serving loop (test fakes have none)."""
    if isinstance(lookup, PgLookup):
        await lookup.open()


async def aclose(lookup: Lookup) -> None:
    """Close it at shutdown."""
    if isinstance(lookup, PgLookup):
        await lookup.close()
