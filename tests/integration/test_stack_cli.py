"""The `loyalty` command line: help, clear errors for unknown commands, config validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from deploy.local.paths import ROOT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_every_command() -> None:
    done = run("--help")
    assert done.returncode == 0
    for command in ("stack", "ingest", "process", "sink", "config apply", "deliveries", "demo"):
        assert command in done.stdout


def test_unknown_command_is_a_clear_error() -> None:
    done = run("launch")
    assert done.returncode == 2
    assert "unknown command 'launch'" in done.stderr


def test_unknown_processor_is_a_clear_error() -> None:
    done = run("process", "billing")
    assert done.returncode == 2
    assert "loyalty, audiences, journeys, router, delivery" in done.stderr


def test_config_apply_rejects_an_invalid_program(tmp_path: Path) -> None:
    bad = tmp_path / "program.yaml"
    bad.write_text("campaigns:\n  - id: c1\n    reward_id: NOPE\n")
    done = run("config", "apply", str(bad))
    assert done.returncode == 1
    assert "unknown reward_id" in done.stderr


def test_config_apply_rejects_a_rule_that_does_not_compile(tmp_path: Path) -> None:
    bad = tmp_path / "program.yaml"
    bad.write_text("campaigns:\n  - id: c1\n    condition: 'properties.amount >'\n")
    done = run("config", "apply", str(bad))
    assert done.returncode == 1
    assert "campaign c1 condition" in done.stderr
