"""deploy.local.supervise restarts a service that exits (the local stack's stand-in for
compose's `restart:` and Kubernetes), stops it on SIGTERM, and gives up on one that keeps
dying at start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from processors.runtime.testing import wait_for

ROOT = Path(__file__).resolve().parents[2]

# a service that exits 1 on its first run and then runs until SIGTERM (exit 0)
FLAKY = """
import pathlib, signal, sys, time
runs = pathlib.Path(sys.argv[1])
n = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(n))
if n == 1:
    sys.exit(1)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(0.05)
"""


def supervise(tmp_path: Path, module: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    return subprocess.Popen([sys.executable, "-m", "deploy.local.supervise", module, *args], cwd=ROOT,
                            env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_a_service_that_exits_is_restarted_and_sigterm_stops_both(tmp_path: Path) -> None:
    (tmp_path / "flaky_service.py").write_text(FLAKY)
    runs = tmp_path / "runs"
    proc = supervise(tmp_path, "flaky_service", str(runs))
    try:
        wait_for(lambda: runs.exists() and runs.read_text() == "2", timeout=30, what="a second run")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # the child's clean exit
    finally:
        proc.kill()
    log = proc.stderr.read()
    assert '"msg":"service exited; restarting it"' in log and '"exit_code":1' in log


def test_a_service_that_keeps_dying_at_start_is_given_up(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "broken_service.py").write_text("import sys; sys.exit(3)\n")
    monkeypatch.setenv("SUPERVISE_BACKOFF_S", "0.01")
    proc = supervise(tmp_path, "broken_service")
    assert proc.wait(60) == 3
    assert '"msg":"giving up: the service keeps exiting at start"' in proc.stderr.read()
