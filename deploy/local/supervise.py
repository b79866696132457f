"""A minimal supervisor for the local stack: `python -m deploy.local.supervise MODULE [ARGS]`.

A stream processor that cannot make progress exits (its watchdog, a fatal Kafka error) so that
a supervisor restarts it; compose (`restart:`) and Kubernetes do that in deployment, and this
does it for `make up`. The child runs as `python -m MODULE ARGS` and is restarted after any
exit but a clean one (0) or one we asked for (SIGTERM/SIGINT are forwarded, then we leave
with the child's status). Restarts back off from 1 s (`SUPERVISE_BACKOFF_S`) to 30 s; a child
that keeps dying within seconds of its start (a bad flag, a missing database) is given up
after `MAX_QUICK_FAILURES`, so `stack up` reports it instead of waiting on a loop. The child
dies with the supervisor (PR_SET_PDEATHSIG): a SIGKILL of the supervisor leaves no orphan.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

from plumbing.logs import configure_logging

log = logging.getLogger("deploy.supervise")
QUICK_S = 10.0  # a run shorter than this is a quick failure
MAX_QUICK_FAILURES = 5
MAX_BACKOFF_S = 30.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the supervisor dies (Linux; elsewhere a no-op)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class Supervisor:
    def __init__(self, argv: list[str]) -> None:
        self.argv = [sys.executable, "-m", *argv]
        self.name = " ".join(argv[:3])  # e.g. "deploy.cli process loyalty"
        self.stopping = threading.Event()
        self.child: subprocess.Popen | None = None

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping.set()
        if self.child and self.child.poll() is None:
            self.child.send_signal(signum)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._forward)
        first_backoff = float(os.environ.get("SUPERVISE_BACKOFF_S", "1"))
        quick_failures, backoff = 0, first_backoff
        while True:
            started = time.monotonic()
            self.child = subprocess.Popen(self.argv, preexec_fn=_die_with_parent)  # noqa: PLW1509
            if self.stopping.is_set():  # a signal came before the child was known
                self.child.terminate()
            code = self.child.wait()
            if self.stopping.is_set() or code == 0:
                return code
            lasted = time.monotonic() - started
            quick_failures = quick_failures + 1 if lasted < QUICK_S else 0
            backoff = backoff if lasted < QUICK_S else first_backoff
            if quick_failures >= MAX_QUICK_FAILURES:
                log.error("giving up: the service keeps exiting at start",
                          extra={"service": self.name, "exit_code": code,
                                 "failures": quick_failures})  # fmt: skip
                return code
            log.warning("service exited; restarting it",
                        extra={"service": self.name, "exit_code": code, "ran_s": round(lasted, 1),
                               "restart_in_s": backoff})  # fmt: skip
            if self.stopping.wait(backoff):
                return code
            backoff = min(backoff * 2, MAX_BACKOFF_S)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m deploy.local.supervise MODULE [ARGS...]", file=sys.stderr)
        return 2
    configure_logging("supervise")
    return Supervisor(argv).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
