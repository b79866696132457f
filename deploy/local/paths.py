"""Where the local stack keeps its files, and small process/port helpers shared by deploy/local."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def local_dir() -> Path:
    """`.local/` of the checkout, or LOYALTY_LOCAL_DIR (tests use their own)."""
    return Path(os.environ.get("LOYALTY_LOCAL_DIR") or ROOT / ".local")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different TCP ports free on 127.0.0.1 right now: every socket stays bound until
    all are chosen, so two calls in a row cannot hand out the same port (ci24 started a
    stack's ingest on its receiver's port that way)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int | None) -> bool:
    """True if `pid` runs and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def runs(pid: int | None, marker: str) -> int | None:
    """`pid` if it is alive and its command line contains `marker` (a stale pid file may point
    at an unrelated process after a reboot: never signal that one)."""
    if not pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    return pid if marker in cmdline else None


def stop_pid(pid: int | None, timeout: float = 20.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; reaps our own children."""
    stop_pids([pid] if pid else [], timeout)


def stop_pids(pids: list[int], timeout: float = 20.0) -> None:
    """Stop several processes at once: SIGTERM to all, then wait (so slow stops overlap)."""
    for pid in pids:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for pid in pids:
        stop_pid_after(pid, deadline)


def stop_pid_after(pid: int, deadline: float) -> None:
    """Wait for `pid` to exit until `deadline` (monotonic), then SIGKILL it."""
    while pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if pid_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
    while pid_alive(pid):
        _reap(pid)
        time.sleep(0.05)


def _reap(pid: int | None) -> None:
    if not pid:
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def sweep_stale(prefix: str, stop: Callable[[Path], None]) -> None:
    """Remove `<local>/<prefix><pid>-*` dirs left by test sessions that died (their pid is gone),
    stopping what still runs there first via `stop(path)`."""
    for path in local_dir().glob(f"{prefix}*"):
        owner = path.name.removeprefix(prefix).split("-", 1)[0]
        if owner.isdigit() and not pid_alive(int(owner)):
            stop(path)
            shutil.rmtree(path, ignore_errors=True)
