"""Restore workers: a large restore spread over processes, one per core.

The restore loop is Python (reading each changelog record from librdkafka and putting it into
a RocksDB batch) and RocksDB flushes on one background thread per process, so one process
restores with about one core: 12M changelog records (1M loyalty customers) took 70 s on a
quiet 2-core VM, 55 s with two workers (docs/benchmarks.md). Each store of each partition is
its own RocksDB directory, so when a restore is large the `Restorer` hands whole partitions to
worker processes (`python -m processors.runtime.restore_worker`,
`RuntimeOptions.restore_workers`, default `default_workers()`) and opens them again
in-process once a worker has exited.

Nothing new is trusted: a worker writes the same atomic batches, each with its changelog
checkpoint, and closes (flushes) each store when its partition is complete. The in-process
restore that follows reads from those checkpoints to the end (usually nothing), so a worker
that fails, or is killed because its partition was revoked, loses only its own work since
its last flushed batch, as a killed processor would. A worker dies with its parent (the
kernel's parent-death signal), so a processor restarted after a SIGKILL finds no orphan
holding its stores' locks.

The parent writes the job (JSON) to the worker's stdin; the worker answers with one JSON line
per step on stdout (`{"remaining": n, "left": [[store, partition, n], ...]}`, which the parent
shows as its `stream_restore_remaining_records`) and a last one with what it restored and how
long each store took (`{"restored": {store: records}, "seconds": {store: s}}`); it logs to
stderr like every service.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:  # changelog.py imports this module
    from processors.runtime.changelog import Restorer

log = logging.getLogger(__name__)

WORKER_STEP_S = 0.5  # a worker reports its progress this often
# below this many records a worker's start-up (a Python process, ~0.5-1 s) costs more than it
# saves: one process restores some 150,000-300,000 records a second
PARALLEL_MIN_RECORDS = 500_000
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # a cgroup v2 CPU quota: "<quota> <period>" or "max ..."


def default_workers() -> int:
    """RESTORE_WORKERS, else the CPUs this process may use: its CPU affinity, capped by a
    cgroup v2 CPU quota (a container limited to 2 CPUs on a 64-CPU node gets 2)."""
    if configured := os.environ.get("RESTORE_WORKERS"):
        return max(1, int(configured))
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = CPU_MAX.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota: the affinity it is
    return cpus


class RestoreWorker:
    """The parent's handle on one worker process restoring `stores` ({partition: {store: path}})."""

    command = [sys.executable, "-m", __name__]

    def __init__(self, bootstrap: str, group: str, processor: str,
                 stores: dict[int, dict[str, Path]], remaining: int,
                 local_indexes: dict[str, str] | None = None) -> None:  # fmt: skip
        self.stores = stores
        self.remaining = remaining  # changelog records left, as last reported
        self.restored: dict[str, int] = {}
        self.seconds: dict[str, float] = {}  # time spent reading, by store (in the last report)
        self.left: list[tuple[str, int, int]] = []  # (store, partition, records left) reported
        paths = {str(p): {store: str(path) for store, path in s.items()} for p, s in stores.items()}
        job = {"bootstrap": bootstrap, "group": group, "processor": processor, "stores": paths,
               "local_indexes": local_indexes or {}}  # fmt: skip
        env = {**os.environ, "RESTORE_PARENT_PID": str(os.getpid())}
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(orjson.dumps(job))
            self.proc.stdin.close()
        except BrokenPipeError:
            pass  # it died at start: exited() says so
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._pending = b""

    @property
    def partitions(self) -> set[int]:
        return set(self.stores)

    def exited(self) -> int | None:
        """The worker's exit code once it has exited (its last reports read), else None."""
        self._read_reports()
        code = self.proc.poll()
        if code is not None:
            self._read_reports()
            self._close_pipe()
        return code

    def kill(self) -> None:
        """Stop at once (a revoke): what it flushed stays, checkpointed; the rest is read again."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close_pipe()

    def _read_reports(self) -> None:
        assert self.proc.stdout is not None
        if self.proc.stdout.closed:
            return
        try:
            while chunk := os.read(self.proc.stdout.fileno(), 1 << 16):
                self._pending += chunk
        except BlockingIOError:
            pass
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            report = orjson.loads(line)
            self.remaining = report.get("remaining", self.remaining)
            self.restored = report.get("restored", self.restored)
            self.seconds = report.get("seconds", self.seconds)
            self.left = [tuple(row) for row in report.get("left", self.left)]

    def _close_pipe(self) -> None:
        assert self.proc.stdout is not None
        if not self.proc.stdout.closed:
            self.proc.stdout.close()


def split(backlog: dict[int, int], workers: int) -> list[list[int]]:
    """Partitions into `workers` groups of about equal changelog records (largest first)."""
    groups: list[list[int]] = [[] for _ in range(min(workers, len(backlog)))]
    totals = [0] * len(groups)
    for partition, records in sorted(backlog.items(), key=lambda item: (-item[1], item[0])):
        least = totals.index(min(totals))
        groups[least].append(partition)
        totals[least] += records
    return [sorted(group) for group in groups if group]


def _report(**fields: object) -> None:
    sys.stdout.buffer.write(orjson.dumps(fields) + b"\n")
    sys.stdout.buffer.flush()


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the check after each step below still ends an orphan
    if os.getppid() != parent:  # the parent died before the prctl took effect
        sys.exit(1)


def _left(restorer: Restorer, stores: dict[int, dict[str, Path]]) -> list[tuple[str, int, int]]:
    """(store, partition, records left) of every store of the job: 0 once complete."""
    reading = restorer.remaining_by_store()
    return [(store, p, reading.get((store, p), 0)) for p, paths in stores.items() for store in paths]


def main() -> int:
    """Restore the job's partitions to their changelogs' ends, closing each as it completes."""
    from plumbing.logs import configure_logging
    from processors.runtime.changelog import Restorer

    parent = int(os.environ.get("RESTORE_PARENT_PID") or os.getppid())
    _die_with_parent(parent)
    job = orjson.loads(sys.stdin.buffer.read())
    configure_logging(f"restore-{job['processor']}")
    restorer = Restorer(job["bootstrap"], job["group"], job["processor"], local_indexes=job["local_indexes"])
    stores = {int(p): {s: Path(x) for s, x in paths.items()} for p, paths in job["stores"].items()}
    try:
        restorer.add(stores)
        while restorer.partitions:
            restorer.cancel(set(restorer.step(WORKER_STEP_S)))  # complete: closed, so flushed
            _report(remaining=restorer.remaining(), left=_left(restorer, stores))
            if os.getppid() != parent:
                log.warning("restore worker's parent is gone: stopping")
                return 1
        _report(remaining=0, left=_left(restorer, stores), restored=restorer.restored,
                seconds=restorer.seconds)  # fmt: skip
        return 0
    finally:
        restorer.close()


if __name__ == "__main__":
    sys.exit(main())
