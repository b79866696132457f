"""`loyalty dlq`: selection parsing, the replay plan (timers refused), how a dead letter is shown,
and the command line, without a broker."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from deploy import cli, dlq
from processors.runtime.dead_letters import DeadLetter as RuntimeLetter
from processors.runtime.dead_letters import parse_headers


def letter(partition: int, offset: int, reason: str = "processing", key: bytes | None = b"c-1",
           value: bytes | None = b"\xc3\x01abc") -> dlq.DeadLetter:  # fmt: skip
    source = "" if reason == "timer" else "p.events.loyalty"
    made = RuntimeLetter(reason, ValueError("bad amount"), "loyalty", source, 2, 40, 7)
    return dlq.DeadLetter("p.loyalty.dlq", partition, offset, key, value, parse_headers(made.headers()))


@pytest.mark.parametrize(("text", "want"), [("0:5", (0, 5)), (" 12:0 ", (12, 0))])
def test_a_position_is_partition_colon_offset(text: str, want: tuple[int, int]) -> None:
    assert dlq.parse_position(text) == want


@pytest.mark.parametrize("text", ["5", "0-5", "a:1", "1:", ":1", "-1:5", "0:5:1"])
def test_a_bad_position_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="PARTITION:OFFSET"):
        dlq.parse_position(text)


def test_the_plan_takes_the_selected_dead_letters_once_in_order() -> None:
    letters = [letter(0, 5), letter(0, 6), letter(1, 2)]
    plan = dlq.plan_replay(letters, [(1, 2), (0, 5), (1, 2)])
    assert [d.position for d in plan.letters] == ["1:2", "0:5"] and plan.skipped == []
    assert [d.position for d in dlq.plan_replay(letters, None).letters] == ["0:5", "0:6", "1:2"]


def test_a_selected_position_without_a_dead_letter_is_refused() -> None:
    with pytest.raises(dlq.DlqError, match="no dead letter at 0:9, 3:1"):
        dlq.plan_replay([letter(0, 5)], [(0, 5), (0, 9), (3, 1)])


def test_a_selected_timer_dead_letter_is_refused_and_all_skips_it() -> None:
    letters = [letter(0, 5), letter(0, 6, reason="timer", value=b'{"id":"t"}')]
    with pytest.raises(dlq.DlqError, match="cannot replay 0:6: a timer's dead letter has no source record"):
        dlq.plan_replay(letters, [(0, 5), (0, 6)])
    plan = dlq.plan_replay(letters, None)
    assert [d.position for d in plan.letters] == ["0:5"]
    assert [(d.position, why.split(" (")[0]) for d, why in plan.skipped] == [
        ("0:6", "a timer's dead letter has no source record to re-inject")
    ]


def test_a_dead_letter_shows_what_why_and_where_from() -> None:
    j = letter(0, 5).as_json()
    assert {k: j[k] for k in ("partition", "offset", "reason", "error_class", "error_message", "processor",
                              "source_topic", "source_partition", "source_offset", "config_version",
                              "key", "key_hex", "value_size", "value_preview")} == {
        "partition": 0, "offset": 5, "reason": "processing", "error_class": "ValueError",
        "error_message": "bad amount", "processor": "loyalty", "source_topic": "p.events.loyalty",
        "source_partition": 2, "source_offset": 40, "config_version": 7, "key": "c-1", "key_hex": None,
        "value_size": 5, "value_preview": None,
    }  # fmt: skip
    assert j["at_iso"].endswith("Z")
    text = letter(0, 5).describe()
    assert "0:5  " in text and "processing  ValueError: bad amount" in text
    assert "source p.events.loyalty[2]@40  config version 7" in text
    assert "key 'c-1'  value 5 bytes (binary)" in text
    odd = letter(1, 1, key=b"\xff\x00", value=None)
    assert odd.as_json()["key_hex"] == "ff00" and "key 0xff00  value none (tombstone)" in odd.describe()
    long = letter(1, 2, value=b"x" * 500).as_json()
    assert long["value_size"] == 500 and len(long["value_preview"]) == dlq.PREVIEW_CHARS


def test_replay_needs_a_selection_and_valid_positions(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["dlq", "replay", "loyalty"], ["dlq", "replay", "loyalty", "--offset", "0-5"],
                 ["dlq", "replay", "loyalty", "--all", "--offset", "0:5"]):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2
    assert "is not PARTITION:OFFSET" in capsys.readouterr().err


def test_replaying_a_timer_from_the_command_line_produces_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    read: list[Any] = []

    def fake_read(settings: Any, processor: str, partitions: Any = None, **_: Any) -> list[dlq.DeadLetter]:
        read.append((processor, set(partitions)))
        return [letter(0, 5), letter(0, 6, reason="timer")]

    def no_replay(*_: Any, **__: Any) -> None:
        raise AssertionError("nothing may be produced")

    monkeypatch.setattr(dlq, "read_dead_letters", fake_read)
    monkeypatch.setattr(dlq, "replay", no_replay)
    assert cli.main(["dlq", "replay", "loyalty", "--offset", "0:5", "0:6"]) == 1
    assert read == [("loyalty", {0})]
    assert "loyalty dlq replay: cannot replay 0:6: a timer's dead letter" in capsys.readouterr().err


def test_list_json_prints_one_object_per_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(dlq, "read_dead_letters", lambda *a, **k: iter([letter(0, 5), letter(1, 0)]))
    assert cli.main(["dlq", "list", "loyalty", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [(o["partition"], o["offset"]) for o in map(orjson.loads, lines)] == [(0, 5), (1, 0)]
