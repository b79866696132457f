"""Benchmarks never hang: a child that dies ends the wait with its error, and a comparison whose
package is missing is reported and skipped (issue 19 item 8: `python -m bench runtime` once
waited forever after its faust child exited because faust-streaming was not installed)."""

import contextlib
import importlib.util
import subprocess
import sys
import time

import pytest

import bench.runtime as runtime
from bench._child import ChildFailed, missing, read_line, wait_until
from schemas.settings import Settings

DIES = "import sys; sys.stderr.write('ModuleNotFoundError: No module named faust'); sys.exit(3)"


def dead_child(tmp_path):
    log = tmp_path / "faust.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", DIES], stdout=subprocess.PIPE, stderr=err, text=True)
    proc.wait(30)
    return proc, log


def test_a_wait_on_a_child_that_exited_raises_its_exit_code_and_log_at_once(tmp_path):
    proc, log = dead_child(tmp_path)
    began = time.monotonic()
    with pytest.raises(ChildFailed, match=r"(?s)faust exited with 3.*No module named faust"):
        wait_until(lambda: False, 600, "first output", proc, "faust", log)
    assert time.monotonic() - began < 5


def test_the_runtime_reader_stops_waiting_when_its_system_exits(tmp_path):
    proc, log = dead_child(tmp_path)
    reader = runtime.Reader(Settings(kafka_bootstrap_servers="127.0.0.1:1", topic_prefix="t."), "out")
    began = time.monotonic()
    try:
        with pytest.raises(ChildFailed, match="No module named faust"):
            reader.read_until(200_000, timeout=600, proc=proc, log=log)
    finally:
        reader.consumer.close()
    assert time.monotonic() - began < 10


def test_a_child_that_prints_nothing_before_exiting_is_reported_not_awaited(tmp_path):
    proc, _ = dead_child(tmp_path)
    with pytest.raises(ChildFailed, match="receiver exited with 3"):
        read_line(proc, 600, "receiver")


def test_a_wait_without_progress_times_out():
    with pytest.raises(TimeoutError, match="results not reached in 0.1 s"):
        wait_until(lambda: False, 0.1, "results")


def test_runtime_reports_and_skips_faust_when_it_is_not_installed(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "faust" else real(n, *a))
    measured = []

    def measure(name, output, settings, total, state):
        measured.append(name)
        return {"system": name, "events_s": 1000.0, "complete": True, "p50_ms": 1.0, "p99_ms": 2.0}

    monkeypatch.setattr(runtime, "broker", lambda: contextlib.nullcontext("127.0.0.1:1"))
    monkeypatch.setattr(runtime, "ensure_topics", lambda *a: None)
    monkeypatch.setattr(runtime, "produce", lambda *a: None)
    monkeypatch.setattr(runtime, "measure", measure)
    assert runtime.main([]) == 0
    out = capsys.readouterr().out
    assert measured == ["bare", "runtime"]
    assert "faust    skipped: faust is not installed" in out
    assert "runtime / faust     = not measured" in out
    assert missing("json") is None


def test_runtime_takes_its_flags(monkeypatch, capsys):
    """`python -m bench runtime --events N --only runtime` runs that system with N events."""
    seen = []
    monkeypatch.setattr(runtime, "broker", lambda: contextlib.nullcontext("127.0.0.1:1"))
    monkeypatch.setattr(runtime, "ensure_topics", lambda *a: None)
    monkeypatch.setattr(runtime, "produce", lambda settings, total: seen.append(("produce", total)))
    monkeypatch.setattr(runtime, "measure", lambda name, output, settings, total, state: seen.append(
        (name, total)) or {"system": name, "events_s": 1.0, "complete": True, "p50_ms": 1.0, "p99_ms": 1.0})
    assert runtime.main(["--events", "1234", "--only", "runtime"]) == 0
    assert seen == [("produce", 1234), ("runtime", 1234)]
    assert "bare loop" not in capsys.readouterr().out  # no ratio without its comparison
