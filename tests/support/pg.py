"""Small PostgreSQL helpers for tests that read the sink's tables."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from schemas.settings import Settings, libpq_url
from sinks.migrate import upgrade


def query(url: str, sql: str, *args: Any) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def scalar(url: str, sql: str, *args: Any) -> Any:
    return query(url, sql, *args)[0][0]


def committed(cfg: Settings) -> int:
    """Records committed to PostgreSQL for this test's topics (offsets start at 0)."""
    return scalar(
        cfg.database_url,
        "SELECT coalesce(sum(next_offset), 0) FROM sink_offsets WHERE topic LIKE %s",
        cfg.topic_prefix + "%",
    )


@contextmanager
def scratch_database(server_url: str, prefix: str = "test", migrated: bool = True) -> Iterator[str]:
    """A new database on the server of `server_url`, migrated to head unless `migrated` is
    False; its URL, and it is dropped afterwards (sessions still on it are ended)."""
    admin = libpq_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = admin.rsplit("/", 1)[0] + "/" + name
    try:
        if migrated:
            upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
