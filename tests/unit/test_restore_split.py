"""How a large restore's partitions are shared out among the worker processes."""

import os

from processors.runtime import restore_worker
from processors.runtime.restore_worker import default_workers, split


def test_split_balances_records_over_the_workers():
    assert split({0: 10, 1: 10, 2: 10, 3: 10, 4: 10, 5: 10}, 2) == [[0, 2, 4], [1, 3, 5]]
    assert split({0: 100, 1: 10, 2: 10, 3: 80}, 2) == [[0], [1, 2, 3]]
    assert split({0: 5, 1: 5}, 4) == [[0], [1]]


def test_default_workers_follow_the_env_then_the_cpus(monkeypatch):
    monkeypatch.setenv("RESTORE_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.setenv("RESTORE_WORKERS", "0")
    assert default_workers() == 1
    monkeypatch.delenv("RESTORE_WORKERS")
    assert 1 <= default_workers() <= len(os.sched_getaffinity(0))


def test_default_workers_are_capped_by_a_cgroup_cpu_quota(monkeypatch, tmp_path):
    monkeypatch.delenv("RESTORE_WORKERS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(restore_worker, "CPU_MAX", cpu_max)
    cpu_max.write_text("200000 100000\n")
    assert default_workers() == 2
    cpu_max.write_text("50000 100000\n")
    assert default_workers() == 1
    cpu_max.write_text("max 100000\n")
    assert default_workers() == 64
