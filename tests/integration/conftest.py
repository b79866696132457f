"""Fixtures of the integration tests: a fresh, migrated sink database per test module."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from schemas.settings import Settings, libpq_url
from sinks.migrate import upgrade
from sinks.sink import Sink, SinkOptions


@pytest.fixture(scope="module")
def sink_db(database_url: str) -> Iterator[str]:
    """A fresh database on the server of DATABASE_URL, migrated to head."""
    name = f"sink_{uuid.uuid4().hex[:10]}"
    admin = libpq_url(database_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = admin.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def cfg(settings: Settings, sink_db: str) -> Settings:
    """This test's settings, pointed at the module's sink database."""
    return dataclasses.replace(settings, database_url=sink_db)


@pytest.fixture
def sink(cfg: Settings) -> Iterator[Sink]:
    """A running sink into the module's database, with small batches."""
    s = Sink(cfg, SinkOptions(batch_size=500, linger_ms=50)).start()
    yield s
    s.stop()
