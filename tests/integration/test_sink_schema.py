"""The migrations and the sink's table metadata (sinks/schema.py) describe the same schema.

The writer builds its statements from the metadata and Alembic's autogenerate diffs against
it, so a migration that drifts from it (a column, type, nullability, default or index only on
one side) must fail here, on a database migrated from nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, create_engine

from schemas.settings import libpq_url, sqlalchemy_url
from sinks import schema
from sinks.migrate import alembic_config, upgrade
from tests.support.pg import scratch_database

pytestmark = pytest.mark.integration

# the heads before 0011_merge_heads: what `upgrade heads` left in existing databases
OLD_HEADS = ("0005_admin_audit", "0005", "0007_customer_badges", "0010_campaign_budgets",
             "0010_customer_merged_into")  # fmt: skip
HEAD = "0012_drop_prefix_indexes"  # the one head, after the merge


@pytest.fixture
def empty_db(database_url: str) -> Iterator[str]:
    """A new, empty database on the server of DATABASE_URL, dropped afterwards."""
    with scratch_database(database_url, "schema", migrated=False) as url:
        yield url


def diff(url: str, metadata=schema.metadata) -> list:
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return compare_metadata(ctx, metadata)
    finally:
        engine.dispose()


def current(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        return {v for (v,) in conn.execute("SELECT version_num FROM alembic_version")}


def test_migrations_to_head_match_the_metadata(empty_db: str) -> None:
    upgrade(empty_db, "head")
    assert diff(empty_db) == []


def test_the_comparison_sees_a_drift(empty_db: str) -> None:
    """The empty diff above means something: a column only in the metadata, a nullability and
    a server default that differ are each reported."""
    upgrade(empty_db, "head")
    drifted = MetaData()
    for table in schema.metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["ledger_lines"].append_column(Column("extra", Integer))
    drifted.tables["events"].c.kind.nullable = True
    drifted.tables["wallets"].c.points.server_default = None
    kinds = {change[0] if isinstance(change, tuple) else change[0][0] for change in diff(empty_db, drifted)}
    assert kinds == {"add_column", "modify_nullable", "modify_default"}


def test_one_head() -> None:
    """New revisions go off a single head, so `upgrade head` (the Alembic CLI's usual
    command) and `upgrade heads` (sinks.migrate's) reach the same schema."""
    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [HEAD]


def test_a_database_at_the_old_heads_moves_through_the_merge_to_head(empty_db: str) -> None:
    for head in OLD_HEADS:
        upgrade(empty_db, head)
    assert current(empty_db) == set(OLD_HEADS)
    upgrade(empty_db)  # what the sink and ingest run at start: `heads`
    assert current(empty_db) == {HEAD}
    upgrade(empty_db, "head")
    assert current(empty_db) == {HEAD}
    assert diff(empty_db) == []


def test_the_alembic_cli_upgrade_head(empty_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`DATABASE_URL=... alembic -c sinks/alembic.ini upgrade head` (env.py's own engine)."""
    monkeypatch.setenv("DATABASE_URL", empty_db)
    command.upgrade(alembic_config(), "head")
    assert current(empty_db) == {HEAD}
    assert diff(empty_db) == []


def definitions(url: str) -> dict[str, set[str]]:
    """Every index and constraint of the public tables as PostgreSQL prints it (what Alembic's
    comparison leaves out: a partial index's WHERE, INCLUDE, operator classes, DESC)."""
    with psycopg.connect(libpq_url(url)) as conn:
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes JOIN pg_tables USING (schemaname, tablename) "
            "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        ).fetchall()  # tables only: the materialized view's index lives in its migration
        constraints = conn.execute(
            "SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE connamespace = 'public'::regnamespace "
            "AND conrelid <> 'alembic_version'::regclass"
        ).fetchall()
    return {"indexes": {i for (i,) in indexes}, "constraints": {c for (c,) in constraints}}


def test_indexes_and_constraints_are_the_metadatas(empty_db: str, database_url: str) -> None:
    """The metadata's own DDL (create_all on another empty database) and the migrations give
    the same index and constraint definitions, down to each WHERE and INCLUDE."""
    upgrade(empty_db, "head")
    with scratch_database(database_url, "schema", migrated=False) as other_url:
        engine = create_engine(sqlalchemy_url(other_url))
        schema.metadata.create_all(engine)
        engine.dispose()
        with psycopg.connect(libpq_url(other_url), autocommit=True) as conn:
            conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        ours, migrated = definitions(other_url), definitions(empty_db)
        for kind in ("indexes", "constraints"):
            assert (ours[kind] - migrated[kind], migrated[kind] - ours[kind]) == (set(), set()), kind
