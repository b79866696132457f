"""The stage COPY is binary (sinks/writer.py copy_rows): the rows it writes are the ones the
text COPY wrote, and a value that has no binary form for its column still goes to PostgreSQL
as text, which stores what it can parse and refuses (quarantines) what it cannot."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from sinks import writer
from sinks.batch import Batch
from sinks.writer import write_batch
from tests.integration.test_sink_merged_events import dump, records, write
from tests.support.pg import query, scratch_database

pytestmark = pytest.mark.integration
AT = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def dbs(database_url: str) -> Iterator[list[str]]:
    with scratch_database(database_url, "sink") as one, scratch_database(database_url, "sink") as two:
        yield [one, two]


def test_binary_and_text_copy_write_the_same_rows(dbs: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    binary, text = dbs
    recs = records()
    encode, fallbacks = writer.encode_binary, []

    def spy(*args):
        data = encode(*args)
        fallbacks.append(data is None)
        return data

    monkeypatch.setattr(writer, "encode_binary", spy)
    write(binary, recs, per_batch=4, offset=0)
    assert fallbacks and not any(fallbacks)  # every stage went binary
    monkeypatch.setattr(writer, "encode_binary", lambda *args: None)  # the text COPY
    write(text, recs, per_batch=4, offset=0)
    assert dump(binary) == dump(text)
    assert query(binary, "SELECT count(*) FROM events")[0][0] > 5


def budget(campaign: str, spent: object) -> dict:
    return {"campaign_id": campaign, "reward_id": "POINTS", "budget": 100.0, "spent": spent,
            "remaining": None, "exhausted_at": None, "updated_at": AT}  # fmt: skip


def test_a_value_without_a_binary_form_goes_as_text(dbs: list[str]) -> None:
    url = dbs[0]
    batch = Batch()
    batch.put("campaign_budgets", budget("c1", 5.0))
    batch.put("campaign_budgets", budget("c2", "7.5"))  # a str for a double: PostgreSQL parses it
    with psycopg.connect(url) as conn:
        assert write_batch(conn, batch, {}).rejects == []
    assert query(url, "SELECT campaign_id, spent FROM campaign_budgets ORDER BY 1") == [
        ("c1", 5.0),
        ("c2", 7.5),
    ]


def test_a_value_postgresql_cannot_parse_is_refused_by_it(dbs: list[str]) -> None:
    url = dbs[0]
    batch = Batch()
    batch.put("campaign_budgets", budget("c1", 5.0))
    batch.put("campaign_budgets", budget("c2", "lots"))
    with psycopg.connect(url) as conn:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            with conn.transaction():
                writer._write_rows(conn, batch.rows, {})
