"""`${NAME}` in a program YAML: expanded from the environment at load time, an unset name refused.

`loyalty config apply` and `loyalty stack up` both load programs through `deploy.cli.load_program`;
the shipped example points its webhook at `${RECEIVER_URL}` so it follows the stack's receiver port.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.cli import ProgramFileError, expand_env, load_program, main
from deploy.local.paths import ROOT
from deploy.local.stack import program_env

EXAMPLE = ROOT / "examples" / "program.yaml"


def test_expands_names_in_every_string_and_leaves_other_values() -> None:
    data = {"a": ["${X}/hooks", 3, None], "b": {"c": "${X}-${Y}", "d": True}}
    assert expand_env(data, {"X": "http://h:1", "Y": ""}) == {
        "a": ["http://h:1/hooks", 3, None],
        "b": {"c": "http://h:1-", "d": True},
    }


def test_dollar_dollar_escapes_and_bare_dollar_is_kept() -> None:
    assert expand_env("$${X} $X ${X}", {"X": "v"}) == "${X} $X v"


def test_unset_name_is_refused_with_where_and_which() -> None:
    with pytest.raises(ProgramFileError) as err:
        expand_env({"webhooks": [{"url": "${NOPE}/webhooks"}]}, {})
    assert "webhooks[0].url" in str(err.value) and "NOPE" in str(err.value)


def test_value_cannot_change_yaml_structure(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: ${NAME}\n")
    program = load_program(path, {"NAME": "x\nrounding: ceil # not yaml"})
    assert program.name == "x\nrounding: ceil # not yaml"


def test_example_webhook_follows_the_stack_receiver() -> None:
    """The shipped example has no hard-coded port: with LOYALTY_PORTS=auto it still reaches the
    demo receiver, and a RECEIVER_URL inherited from another stack does not win."""
    assert "127.0.0.1:18080" not in EXAMPLE.read_text()
    env = program_env("http://127.0.0.1:45678")
    program = load_program(EXAMPLE, env)
    assert [w.url for w in program.webhooks] == ["http://127.0.0.1:45678/webhooks"]


def test_stack_receiver_wins_over_inherited_receiver_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIVER_URL", "http://127.0.0.1:1")
    assert program_env("http://127.0.0.1:2")["RECEIVER_URL"] == "http://127.0.0.1:2"


def test_config_apply_refuses_unset_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RECEIVER_URL", raising=False)
    assert main(["config", "apply", str(EXAMPLE)]) == 1
    err = capsys.readouterr().err
    assert "RECEIVER_URL" in err and "not set" in err and "webhooks[0].url" in err
