"""Run the sink schema's Alembic migrations to head, programmatically.

Several services may start at once, so the upgrade holds a PostgreSQL advisory lock.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from schemas.settings import Settings, libpq_url, sqlalchemy_url

HERE = Path(__file__).parent
LOCK_ID = 0x51_4E_4B  # "SNK": serialises concurrent upgrades


def alembic_config() -> Config:
    cfg = Config(str(HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    return cfg


def upgrade(database_url: str, revision: str = "heads") -> None:
    """Bring the database at `database_url` (postgresql:// accepted) to `revision`.

    "heads" (every branch) is the same as "head" since 0011_merge_heads joined the branches;
    it stays the default so a database and a tree that grow a second branch again still
    migrate, though the schema test requires one head."""
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": LOCK_ID})
            conn.commit()
            try:
                cfg = alembic_config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": LOCK_ID})
                conn.commit()
    finally:
        engine.dispose()


@contextmanager
def scratch_database(server_url: str, prefix: str = "scratch", migrated: bool = True) -> Iterator[str]:
    """A new database on the server of `server_url`, migrated to head unless `migrated` is
    False; yields its URL and drops it afterwards, ending sessions still on it (tests, the
    dashboard's demo seed)."""
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


def main(argv: list[str] | None = None) -> int:
    """`python -m sinks.migrate [database_url]`."""
    args = sys.argv[1:] if argv is None else argv
    upgrade(args[0] if args else Settings.from_env().database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
