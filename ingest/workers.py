"""Run the ingest app in N worker processes, each with its own listening socket (SO_REUSEPORT).

uvicorn's `workers=N` shares one listening socket between its workers: with a few keep-alive
connections (load balancers and backends keep small pools) the kernel hands them all to whichever
worker wakes first, and the other cores idle. Here every worker gets its own socket bound to the
same host:port with SO_REUSEPORT, so the kernel spreads new connections over the workers by a
hash of each connection's addresses.

The supervisor (the parent process):

- binds a socket for a worker, starts the worker with it (spawn), then closes its own copy: the
  socket lives in that worker only, so a worker that dies takes its socket out of the group and
  the kernel stops routing connections to it;
- a worker listens only once its app started (uvicorn listens after the lifespan startup), so
  new connections never wait behind a worker that is still starting;
- restarts a worker that exits unexpectedly, after a short backoff; gives up (exit status 1) when
  a worker fails to start MAX_START_FAILURES times in a row;
- on SIGTERM / SIGINT sends SIGTERM to the workers and waits for their graceful shutdown;
- owns the metrics directory every worker writes to (ingest/metrics.py): emptied at start,
  a dead worker's live gauges removed, so one scrape of /metrics covers every worker.

A worker stops by itself (gracefully) when the supervisor disappears, even if it was SIGKILLed.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

import uvicorn

from ingest import metrics
from ingest.ratelimit import SharedBuckets, use_shared
from plumbing.logs import configure_logging

log = logging.getLogger(__name__)

APP = "ingest.service:app_factory"
GRACEFUL_SHUTDOWN_S = 10  # uvicorn's timeout_graceful_shutdown (open connections)
STOP_TIMEOUT_S = GRACEFUL_SHUTDOWN_S + 8  # then the producer flush; after that SIGKILL
MAX_START_FAILURES = 3  # a worker that exits before serving this many times in a row: give up
RESTART_BACKOFF_S = 0.5  # doubled by each failed start in a row
READY = "ready"


@dataclass(frozen=True)
class Options:
    host: str
    port: int
    workers: int = 1
    log_level: str = "info"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_address(host: str, port: int) -> int:
    """Raise OSError when something already listens on host:port (another process sharing it
    with SO_REUSEPORT included); return the port (a free one if `port` is 0)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return probe.getsockname()[1]


def worker_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port in the SO_REUSEPORT group; its worker starts listening."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


# --- worker process ---------------------------------------------------------------------------


class WorkerServer(uvicorn.Server):
    """uvicorn's server, telling the supervisor once it accepts connections."""

    def __init__(self, config: uvicorn.Config, link: Connection) -> None:
        super().__init__(config)
        self.link = link

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            # What exists now (modules, the app, compiled schemas) lives as long as the worker:
            # frozen, the full collections that bulk requests trigger no longer rescan it
            # (2-3 us less CPU per bulk event).
            gc.collect()
            gc.freeze()
            metrics.WORKERS.set(1)
            self.link.send(READY)


def serve(
    sock: socket.socket, link: Connection, log_level: str, buckets: SharedBuckets | None = None
) -> None:
    """Worker process: serve the app on `sock` until SIGTERM / SIGINT or the supervisor is gone.

    `buckets` are the host's shared rate-limit buckets (one limit for all workers)."""
    configure_logging("ingest")
    use_shared(buckets)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_quietly)
    threading.Thread(target=_stop_with_supervisor, args=(link,), name="supervisor-watch", daemon=True).start()
    config = uvicorn.Config(
        APP,
        factory=True,
        log_level=log_level,
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    try:
        WorkerServer(config, link).run(sockets=[sock])
    except Exception:  # e.g. the app factory failed: one JSON log line, not a bare traceback
        log.exception("ingest worker failed")
        raise SystemExit(1) from None


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    """SIGTERM / SIGINT outside uvicorn's own handlers: before the server runs, and the signal
    uvicorn raises again once its graceful shutdown is over. Exit 0, no traceback."""
    raise SystemExit(0)


def _stop_with_supervisor(link: Connection) -> None:
    """The supervisor never writes to the link: recv returns only at EOF, when it is gone."""
    try:
        link.recv()
    except (EOFError, OSError):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


# --- supervisor -------------------------------------------------------------------------------


@dataclass
class Worker:
    slot: int
    process: BaseProcess
    link: Connection | None  # the worker sends READY on it; None once it reached EOF
    ready: bool = False

    @property
    def pid(self) -> int | None:
        return self.process.pid


class Supervisor:
    """Keeps `options.workers` worker processes serving on host:port until SIGTERM / SIGINT."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.port = options.port
        self.context = multiprocessing.get_context("spawn")
        self.buckets = SharedBuckets(context=self.context)  # every worker, restarts included
        self.workers: dict[int, Worker] = {}  # slot -> its running worker
        self.failures = dict.fromkeys(range(options.workers), 0)  # slot -> failed starts in a row
        self.restart_at: dict[int, float] = {}  # slot -> when to start its next worker
        self.stop_signal: int | None = None
        self.gave_up = False
        self.metrics_dir: Path | None = None

    def run(self) -> int:
        """Serve until a stop signal (exit status 0) or until workers keep failing to start (1)."""
        host = self.options.host
        try:
            self.port = check_address(host, self.options.port)
        except OSError as exc:
            log.error(f"cannot listen on {host}:{self.options.port}: {exc.strerror or exc}")
            return 1
        self.metrics_dir, created = metrics.prepare_dir()  # before any worker: they inherit it
        wake_read, wake_write = socket.socketpair()
        for end in (wake_read, wake_write):
            end.setblocking(False)
        previous = self._handle_signals(wake_write)
        try:
            for slot in range(self.options.workers):
                self._start(slot)
            self._supervise(wake_read)
        finally:
            self._stop_all()
            signal.set_wakeup_fd(-1)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake_read.close()
            wake_write.close()
            if created:
                metrics.remove_dir(self.metrics_dir)
        return 1 if self.gave_up else 0

    def _handle_signals(self, wake: socket.socket) -> dict[int, object]:
        """Record the stop signal; the wake-up fd interrupts the wait in _supervise."""
        signal.set_wakeup_fd(wake.fileno())
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum

    def _supervise(self, wake: socket.socket) -> None:
        while self.stop_signal is None and not self.gave_up:
            waiting = [wake]
            for worker in self.workers.values():
                waiting.append(worker.process.sentinel)
                if worker.link is not None and not worker.ready:
                    waiting.append(worker.link)
            timeout = max(0.0, min(self.restart_at.values()) - time.monotonic()) if self.restart_at else None
            wait(waiting, timeout)
            _drain(wake)
            for worker in list(self.workers.values()):
                self._check_ready(worker)
                if not worker.process.is_alive():
                    self._exited(worker)
            for slot, at in list(self.restart_at.items()):
                if at <= time.monotonic() and self.stop_signal is None and not self.gave_up:
                    del self.restart_at[slot]
                    self._start(slot)

    def _start(self, slot: int) -> None:
        try:
            sock = worker_socket(self.options.host, self.port)
        except OSError as exc:
            where = f"{self.options.host}:{self.port}"
            log.error(f"cannot bind {where}: {exc.strerror or exc}", extra={"slot": slot})
            self._failed_start(slot)
            return
        link, child_link = self.context.Pipe()
        process = self.context.Process(
            target=serve,
            args=(sock, child_link, self.options.log_level, self.buckets),
            name=f"ingest-worker-{slot}",
        )
        try:
            process.start()
        finally:
            sock.close()  # the worker has its copy; ours would keep a dead worker's socket routed
            child_link.close()
        self.workers[slot] = Worker(slot, process, link)
        log.info("ingest worker started", extra={"slot": slot, "pid": process.pid})

    def _check_ready(self, worker: Worker) -> None:
        if worker.ready or worker.link is None or not worker.link.poll():
            return
        try:
            worker.link.recv()
        except (EOFError, OSError):  # it exited before serving
            worker.link.close()
            worker.link = None
            return
        worker.ready = True
        self.failures[worker.slot] = 0
        log.info("ingest worker ready", extra={"slot": worker.slot, "pid": worker.pid})

    def _exited(self, worker: Worker) -> None:
        del self.workers[worker.slot]
        self._mark_dead(worker)
        if worker.link is not None:
            worker.link.close()
        if self.stop_signal is not None:
            return
        fields = {"slot": worker.slot, "pid": worker.pid, "exitcode": worker.process.exitcode}
        if worker.ready:
            log.warning("ingest worker exited; starting a new one", extra=fields)
            self._schedule(worker.slot)
        else:
            log.error("ingest worker exited before serving", extra=fields)
            self._failed_start(worker.slot)

    def _failed_start(self, slot: int) -> None:
        self.failures[slot] += 1
        if self.failures[slot] >= MAX_START_FAILURES:
            log.error(f"ingest worker failed to start {self.failures[slot]} times in a row; stopping")
            self.gave_up = True
        else:
            self._schedule(slot)

    def _schedule(self, slot: int) -> None:
        self.restart_at[slot] = time.monotonic() + RESTART_BACKOFF_S * 2 ** self.failures[slot]

    def _stop_all(self) -> None:
        """SIGTERM every worker (uvicorn's graceful shutdown), SIGKILL those still alive after
        STOP_TIMEOUT_S."""
        if self.workers:
            log.info("stopping ingest workers", extra={"pids": [w.pid for w in self.workers.values()]})
        for worker in self.workers.values():
            worker.process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in self.workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                log.warning("ingest worker did not stop in time; killing it", extra={"pid": worker.pid})
                worker.process.kill()
                worker.process.join()
            if worker.link is not None:
                worker.link.close()
            self._mark_dead(worker)
        self.workers.clear()

    def _mark_dead(self, worker: Worker) -> None:
        if self.metrics_dir is not None:
            metrics.worker_exited(self.metrics_dir, worker.pid)


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(512):
            pass
    except BlockingIOError:
        pass
