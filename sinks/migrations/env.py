"""Alembic environment: uses the connection handed over by sinks.migrate, else DATABASE_URL.

`target_metadata` is the sink schema (sinks/schema.py), so `alembic revision --autogenerate`
writes the difference between it and the database.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine

from schemas.settings import Settings, sqlalchemy_url
from sinks.schema import metadata as target_metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_server_default=True,  # as tests/integration/test_sink_schema.py compares
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = os.environ.get("DATABASE_URL", Settings.database_url)
    engine = create_engine(sqlalchemy_url(url))
    with engine.connect() as conn:
        _run(conn)


run_migrations_online()
