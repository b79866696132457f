"""Prometheus metrics of the ingest service, one scrape for every worker process.

`loyalty ingest --workers N` runs N processes behind one port, and a scrape of /metrics lands
on one of them. So the supervisor (ingest/workers.py) points PROMETHEUS_MULTIPROC_DIR at a
directory it empties at start (its own temporary one unless set), every worker writes its
values there (prometheus-client's multiprocess mode: one mmap file per process and kind), and
/metrics sums them all (MultiProcessCollector): the counts of every worker, those that exited
included, so counters never go back. When a worker exits its live gauges are dropped
(`mark_process_dead`). Run without the supervisor (tests, `create_app()`), the metrics are
plain in-process ones.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("ingest_requests_total", "HTTP requests", ["route", "status"])
LATENCY = Histogram(
    "ingest_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS = Counter("ingest_events_total", "Events by outcome", ["outcome", "path"])
SYNC_WAITS = Counter("ingest_sync_waits_total", "?wait=true requests by outcome", ["outcome"])
# livesum: the sum over the workers alive now (a dead worker's value is dropped)
WORKERS = Gauge("ingest_workers", "Worker processes serving", multiprocess_mode="livesum")

_CHILDREN: dict[tuple[object, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, looked up once per process: labels() converts, locks and
    hashes on every call, a cost the single-event path paid three times per request."""
    key = (metric, labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found


def scrape() -> bytes:
    """The exposition of every worker (multiprocess mode), else of this process."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return generate_latest()
    for _ in range(2):
        try:
            return _every_worker(path)
        except FileNotFoundError:  # a dead worker's file, listed, then removed by worker_exited
            continue
    return _every_worker(path)


def _every_worker(path: str) -> bytes:
    registry = CollectorRegistry()
    _StartedWorkers(registry, path)
    return generate_latest(registry)


class _StartedWorkers(multiprocess.MultiProcessCollector):
    """The collector without the files still being created: a worker starting (one replacing
    a dead one) creates its file empty and sizes it a moment later, and reading it in between
    failed the whole scrape with a 500 (struct.error). An empty file holds no value yet."""

    def collect(self) -> Any:
        files = [f for f in glob.glob(os.path.join(self._path, "*.db")) if _sized(f)]
        return self.merge(files, accumulate=True)


def _sized(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except FileNotFoundError:  # removed since listed: as the merge would find it
        return False


def prepare_dir() -> tuple[Path, bool]:
    """Supervisor, before any worker starts: PROMETHEUS_MULTIPROC_DIR emptied of an earlier
    run's files (or a new temporary directory when unset), exported for the workers. Returns
    (directory, True when it was created here and should be removed at exit)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):  # a previous run's counts would be summed in otherwise
            old.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix="ingest-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path, not given


def worker_exited(path: Path, pid: int | None) -> None:
    """Supervisor: drop a dead worker's live gauges (its counters stay in the sums)."""
    if pid is not None:
        multiprocess.mark_process_dead(pid, str(path))


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
