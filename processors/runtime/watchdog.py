"""The hard watchdog: a process whose processing loop is stuck inside one call exits.

The runner's own watchdog (runner.py `_watchdog`) runs in the loop, so it cannot see a call
that never returns. librdkafka has such calls: `send_offsets_to_transaction` and friends wait
on their op without a bound in some states after a broker restart, whatever timeout they were
given (seen in tests/reliability/test_broker_restart_stack.py). Every recovery path of the
loop is bounded by `stall_timeout_s` after the last commit, so a loop that has not turned for
longer than that plus a margin is stuck for good: this thread logs where it is stuck and ends
the process (exit 70) for its supervisor (compose, Kubernetes, deploy/local/supervise.py) to
start a fresh one, which is safe: state and offsets are exactly-once under a kill. It runs in
services only, never around a Runner in a test's thread.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable

log = logging.getLogger(__name__)
EXIT_STUCK = 70  # EX_SOFTWARE
MARGIN_S = 30.0  # beyond stall_timeout_s: the longest bounded recovery still fits
STOP_GRACE_S = 30.0  # asked to stop (SIGTERM) and still stuck this long: leave anyway


class LoopWatchdog(threading.Thread):
    """Ends the process when `last_turn()` (monotonic seconds) is older than `limit_s`, or
    older than STOP_GRACE_S once `stopping()` is true."""

    def __init__(self, last_turn: Callable[[], float], stopping: Callable[[], bool], limit_s: float,
                 exit_: Callable[[int], None] = os._exit, every_s: float = 1.0) -> None:  # fmt: skip
        super().__init__(name="loop-watchdog", daemon=True)
        self.last_turn, self.stopping, self.limit_s = last_turn, stopping, limit_s
        self.exit, self.every_s = exit_, every_s
        self.done = threading.Event()

    def run(self) -> None:
        loop_thread = threading.main_thread().ident
        while not self.done.wait(self.every_s):
            stuck = time.monotonic() - self.last_turn()
            limit = min(self.limit_s, STOP_GRACE_S) if self.stopping() else self.limit_s
            if stuck > limit:
                frame = sys._current_frames().get(loop_thread)
                where = "".join(traceback.format_stack(frame)[-6:]) if frame else "unknown"
                log.error("processing loop stuck; exiting for the supervisor to restart",
                          extra={"stuck_s": round(stuck, 1), "limit_s": limit, "where": where})  # fmt: skip
                for handler in logging.getLogger().handlers:
                    handler.flush()
                self.exit(EXIT_STUCK)
                return

    def stop(self) -> None:
        self.done.set()
