"""Reading the admin audit log: the `admin_audit` table the sink fills from `admin.audit`.

Entries are written by the publish itself (ingest/history.py, in the program's Kafka
transaction), so every published change has exactly one entry; this module only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import psycopg
from psycopg.rows import dict_row

from ingest.lookup import StoreUnavailable
from schemas.settings import libpq_url


@dataclass(frozen=True)
class AuditQuery:
    """Filters (all optional) and a page: newest first, `offset` rows skipped."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    resource: str | None = None
    action: str | None = None
    limit: int = 50
    offset: int = 0


class AuditStore(Protocol):
    async def entries(self, query: AuditQuery) -> list[dict[str, Any]]: ...


COLUMNS = "id, at, actor, action, resource, version_before, version_after, summary, changes"


def audit_sql(query: AuditQuery) -> tuple[str, list[Any]]:
    """The SELECT for a query; `resource` matches a resource or everything under it
    (`campaigns` also finds `campaigns/spend`)."""
    where, args = [], []
    for column, op, value in (("at", ">=", query.since), ("at", "<", query.until),
                              ("actor", "=", query.actor), ("action", "=", query.action)):  # fmt: skip
        if value is not None:
            where.append(f"{column} {op} %s")
            args.append(value)
    if query.resource is not None:
        where.append("(resource = %s OR starts_with(resource, %s))")
        args += [query.resource, query.resource.rstrip("/") + "/"]
    sql = f"SELECT {COLUMNS} FROM admin_audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY at DESC, id LIMIT %s OFFSET %s"
    return sql, [*args, query.limit, query.offset]


class PgAudit:
    """One short connection per query, like ingest.lookup.PgLookup."""

    def __init__(self, database_url: str, timeout_s: int = 3) -> None:
        self.url = libpq_url(database_url)
        self.timeout_s = timeout_s

    async def entries(self, query: AuditQuery) -> list[dict[str, Any]]:
        sql, args = audit_sql(query)
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, connect_timeout=self.timeout_s, row_factory=dict_row, autocommit=True
            )
            async with conn:
                rows = await (await conn.execute(sql, args)).fetchall()
        except psycopg.errors.UndefinedTable:
            return []  # sink not migrated yet: nothing recorded
        except psycopg.DataError:
            return []
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from None
        return [entry(row) for row in rows]


def entry(row: dict[str, Any]) -> dict[str, Any]:
    """A row (or a decoded AdminAudit record) as the API shows it."""
    at = row["at"]
    if isinstance(at, int):
        at = datetime.fromtimestamp(at / 1000, UTC)
    changes = row["changes"]
    changes = orjson.loads(changes) if isinstance(changes, str) else changes
    return {**row, "at": at.isoformat(), "changes": changes}


def matches(record: dict[str, Any], query: AuditQuery) -> bool:
    """audit_sql's filter in Python (the in-memory store of the unit tests)."""
    at = datetime.fromtimestamp(record["at"] / 1000, UTC)
    resource = query.resource
    return (
        (query.since is None or at >= query.since)
        and (query.until is None or at < query.until)
        and all(query_value is None or record[name] == query_value
                for name, query_value in (("actor", query.actor), ("action", query.action)))
        and (resource is None or record["resource"] == resource
             or record["resource"].startswith(resource.rstrip("/") + "/"))
    )  # fmt: skip
