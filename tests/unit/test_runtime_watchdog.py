"""The hard watchdog ends a process whose loop is stuck in one call (a librdkafka call that
ignores its timeout), and leaves a loop that turns alone."""

from __future__ import annotations

import threading
import time

from processors.runtime.watchdog import EXIT_STUCK, STOP_GRACE_S, LoopWatchdog


def watch(last_turn: float, stopping: bool, limit_s: float) -> list[int]:
    exits: list[int] = []
    exited = threading.Event()

    def exit_(code: int) -> None:
        exits.append(code)
        exited.set()

    dog = LoopWatchdog(lambda: last_turn, lambda: stopping, limit_s, exit_=exit_, every_s=0.01)
    dog.start()
    exited.wait(1.0)
    dog.stop()
    dog.join(5)
    return exits


def test_a_loop_stuck_past_the_limit_exits_with_its_code() -> None:
    assert watch(time.monotonic() - 200, stopping=False, limit_s=150) == [EXIT_STUCK]


def test_a_loop_that_turned_recently_is_left_alone() -> None:
    assert watch(time.monotonic(), stopping=False, limit_s=150) == []
    assert watch(time.monotonic() - 100, stopping=False, limit_s=150) == []


def test_a_stop_request_shortens_the_limit_to_the_grace() -> None:
    stuck_since = time.monotonic() - STOP_GRACE_S - 5
    assert watch(stuck_since, stopping=False, limit_s=150) == []
    assert watch(stuck_since, stopping=True, limit_s=150) == [EXIT_STUCK]
