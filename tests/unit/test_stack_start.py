"""`loyalty stack up` waits for a service it just started by that process's pid: right after
fork a live child can show an empty command line for a moment, which ci40 took for an exit."""

from pathlib import Path

import pytest

from deploy.local import stack as stack_module
from deploy.local.paths import free_port, stop_pids
from deploy.local.stack import RECEIVER, Service, Stack, _start, wait_healthy


def test_a_service_just_started_is_waited_for_not_taken_for_exited(tmp_path, monkeypatch) -> None:
    stack = Stack(home=tmp_path)
    port = free_port()
    service = Service("receiver", (RECEIVER,), (RECEIVER, "--port", str(port)))
    pid = _start(stack, service, {})
    # What /proc/<pid>/cmdline shows while the kernel is still inside the child's exec: nothing,
    # so a command-line check finds no receiver (162 of 300 reads right after Popen, here).
    monkeypatch.setattr(stack_module, "runs", lambda pid, marker: None)
    try:
        assert wait_healthy(stack, service, port, pid, timeout=30) >= 0
    finally:
        stop_pids([pid])


def test_a_service_that_dies_on_start_is_reported_with_its_log(tmp_path: Path) -> None:
    stack = Stack(home=tmp_path)
    service = Service("receiver", (RECEIVER,), (RECEIVER, "--port", "not-a-port"))
    pid = _start(stack, service, {})
    with pytest.raises(RuntimeError, match="receiver exited") as failed:
        wait_healthy(stack, service, free_port(), pid, timeout=30)
    assert "--port: invalid int value" in str(failed.value), "the log tail says why"
