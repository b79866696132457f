"""What the sink's relay publishes for a reject, without a broker: the runtime's dlq.* headers
read back from the stored error, and a letter whose bytes were not kept is never replayed."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from deploy import dlq
from processors.runtime.dead_letters import parse_headers
from sinks.dlq_relay import Letter
from sinks.rejects import describe, split_error

AT = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def letter(table: str, error: str, bytes_kept: bool = True) -> Letter:
    return Letter(7, "p.events.loyalty", 2, 40, table, error, b"k", b"v" if bytes_kept else None,
                  bytes_kept, 4, AT)  # fmt: skip


@pytest.mark.parametrize(
    ("table", "error", "want"),
    [
        ("", "undecodable: " + describe(ValueError("bad: x")), ("undecodable", "ValueError", "bad: x")),
        ("", "unmappable: " + describe(KeyError("id")), ("unmappable", "KeyError", "'id'")),
        (
            "events",
            describe(psycopg.errors.UntranslatableCharacter("no NUL")),
            ("refused", "UntranslatableCharacter", "[22P05] no NUL"),
        ),  # fmt: skip
        ("events", "DataError [22P05]: unsupported", ("refused", "DataError", "[22P05] unsupported")),
        ("", "no class here", ("refused", "", "no class here")),
    ],
)
def test_the_reason_class_and_message_are_read_back_from_the_stored_error(
    table: str, error: str, want: tuple[str, str, str]
) -> None:
    assert split_error(table, error) == want


def test_a_letter_has_the_runtime_headers_and_the_reject_id() -> None:
    h = parse_headers(letter("", "unmappable: KeyError: 'id'").headers())
    assert h == {
        "dlq.reason": "unmappable", "dlq.error.class": "KeyError", "dlq.error.message": "'id'",
        "dlq.source.topic": "p.events.loyalty", "dlq.source.partition": "2", "dlq.source.offset": "40",
        "dlq.processor": "sink", "dlq.config.version": "4", "dlq.at": str(int(AT.timestamp() * 1000)),
        "dlq.reject_id": "7", "dlq.table": "",
    }  # fmt: skip


def test_a_letter_without_its_original_bytes_is_marked_and_not_replayed() -> None:
    made = letter("events", "DataError: x", bytes_kept=False)
    h = parse_headers(made.headers())
    assert "before migration 0008" in h["dlq.value.dropped"]
    listed = dlq.DeadLetter("p.sink.dlq", 0, 3, made.key, made.value, h)
    with pytest.raises(dlq.DlqError, match="cannot replay 0:3: its original value was not kept"):
        dlq.plan_replay([listed], [(0, 3)])
    assert dlq.plan_replay([listed], None).skipped[0][0] is listed
