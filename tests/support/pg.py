"""Small PostgreSQL helpers for tests that read the sink's tables."""

from __future__ import annotations

from typing import Any

import psycopg

from schemas.settings import Settings
from sinks.migrate import scratch_database

__all__ = ["committed", "query", "scalar", "scratch_database"]


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

