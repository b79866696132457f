"""The writer's targets come from the schema metadata (sinks/schema.py), not from lists of
their own: a column or key the table lacks is refused when the target is built."""

from __future__ import annotations

import pytest

from sinks import schema
from sinks.tables import TARGETS, Target, columns_of, insert_only


def test_every_target_stages_columns_of_its_table_and_keys_on_its_primary_key() -> None:
    for target in TARGETS.values():
        table = schema.metadata.tables[target.table]
        assert set(target.columns) <= set(table.c.keys()), target.name
        assert target.key == tuple(c.name for c in table.primary_key.columns), target.name


def test_a_column_added_to_the_schema_is_staged_and_upserted() -> None:
    """A new column in sinks/schema.py reaches the writer's COPY and INSERT with no other edit."""
    meta = schema.MetaData()
    table = schema.notifications.to_metadata(meta)
    table.append_column(schema.Column("channel", schema.Text))
    target = insert_only("notifications", table)
    assert target.columns[-1] == "channel"
    assert "channel" in target.sql()[0].split("SELECT")[0]


def test_a_target_naming_what_the_table_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="no column"):
        Target("x", "notifications", ("id", "nope"), ("id",))
    with pytest.raises(ValueError, match="key"):
        Target("x", "notifications", ("id",), ("customer_id",))
    with pytest.raises(ValueError, match="no column"):
        columns_of(schema.events, without=("nope",))
