"""Child processes of a benchmark: every wait has a deadline and watches the child, so a child
that dies ends its benchmark with its exit code and log tail instead of leaving `python -m
bench` waiting for output that will never come; a comparison whose package is missing is
reported and skipped."""

from __future__ import annotations

import importlib.util
import select
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class ChildFailed(RuntimeError):
    """A benchmark's child process exited while the benchmark still waited on it."""


def missing(module: str, extra: str = "bench") -> str | None:
    """Why a comparison needing `module` cannot run here (None when it can)."""
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install -e '.[{extra}]', as `make bench` does)"
    return None


def tail(log: Path | None, chars: int = 2000) -> str:
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-chars:].strip()


def check(proc: subprocess.Popen, name: str, log: Path | None = None) -> None:
    """Raise ChildFailed with the child's exit code and last log lines if it has exited."""
    code = proc.poll()
    if code is not None:
        raise ChildFailed(f"{name} exited with {code}" + (f":\n{tail(log)}" if tail(log) else ""))


def wait_until(
    done: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen | None = None,
    name: str = "child",
    log: Path | None = None,
    step: Callable[[], object] = lambda: time.sleep(0.01),
) -> None:
    """Call `step` until `done()`; ChildFailed if `proc` exits first, TimeoutError after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if proc is not None:
            check(proc, name, log)
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: {what} not reached in {timeout:g} s")
        step()


def stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    """SIGTERM, then SIGKILL if the child is still there after `timeout`; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout)


def read_line(proc: subprocess.Popen, timeout: float, name: str = "child") -> str:
    """The first line a child prints on its stdout pipe (a port, say), within `timeout`."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        check(proc, name)
        raise TimeoutError(f"bench: {name} printed nothing in {timeout:g} s")
    return line
