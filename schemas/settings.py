"""Environment settings every component reads the same way (12-factor: env vars, sane defaults)."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Settings:
    """Connection and naming settings; read once with `Settings.from_env()`."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    database_url: str = "postgresql+psycopg://loyalty@127.0.0.1:5433/loyalty"
    topic_prefix: str = ""
    partitions: int = 6
    replication_factor: int = 1
    delivery_max_retry_after_s: float = 300.0  # webhook Retry-After longer than this is capped

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            kafka_bootstrap_servers=_env("KAFKA_BOOTSTRAP_SERVERS", cls.kafka_bootstrap_servers),
            database_url=_env("DATABASE_URL", cls.database_url),
            topic_prefix=_env("TOPIC_PREFIX", ""),
            partitions=int(_env("TOPIC_PARTITIONS", "6")),
            replication_factor=int(_env("TOPIC_REPLICATION_FACTOR", "1")),
            delivery_max_retry_after_s=float(_env("DELIVERY_MAX_RETRY_AFTER_S", "300")),
        )


def sqlalchemy_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and make SQLAlchemy use psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def libpq_url(url: str) -> str:
    """The same URL in the form psycopg/libpq accept directly."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)
