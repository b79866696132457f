"""`python -m bench NAME FLAGS...` hands the flags after each benchmark's name to that
benchmark's main(), as `python -m bench.NAME FLAGS...` does (it once called main([]), so
`python -m bench delivery --rate 600` ran the preloaded delivery benchmark, not the paced one)."""

import contextlib

import pytest

import bench.__main__ as dispatcher
import bench.delivery
import bench.sink


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(dispatcher, "services", contextlib.ExitStack)  # no broker, no PostgreSQL
    monkeypatch.setattr(bench.delivery, "main", lambda argv=None: seen.append(("delivery", argv)) or 0)
    monkeypatch.setattr(bench.sink, "main", lambda argv=None: seen.append(("sink", argv)) or 0)
    return seen


def test_the_flags_after_a_benchmarks_name_reach_its_main(calls):
    assert dispatcher.main(["delivery", "--rate", "600", "--seconds", "5"]) == 0
    assert calls == [("delivery", ["--rate", "600", "--seconds", "5"])]


def test_each_benchmark_gets_only_the_flags_up_to_the_next_name(calls):
    assert dispatcher.main(["delivery", "--rate", "600", "sink", "--no-align", "delivery"]) == 0
    assert calls == [("delivery", ["--rate", "600"]), ("sink", ["--no-align"]), ("delivery", [])]


def test_a_benchmark_named_without_flags_gets_none(calls):
    assert dispatcher.main(["sink"]) == 0
    assert calls == [("sink", [])]


def test_without_names_every_benchmark_runs_without_flags():
    assert dispatcher.plan([]) == [(name, []) for name in dispatcher.modules([])]


def test_flags_before_any_benchmark_name_are_refused(calls):
    with pytest.raises(SystemExit, match="'--rate' is not a benchmark"):
        dispatcher.main(["--rate", "600", "delivery"])
    assert calls == []


def test_flags_for_a_main_that_takes_none_fail_that_benchmark(monkeypatch, calls, capsys):
    monkeypatch.setattr(bench.sink, "main", lambda: calls.append(("sink", None)) or 0)
    assert dispatcher.main(["sink", "--no-align"]) == 1
    assert calls == []
    assert "takes no flags: --no-align" in capsys.readouterr().err
