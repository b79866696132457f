"""A writer thread so decoding the next batch overlaps the database round trips of this one.

Batches are written strictly in order, at most one waiting behind the one in flight. After
the first failure every later batch is skipped (each assumed the previous one committed)
until the sink has drained the writer and re-read the stored offsets.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import psycopg

from sinks.batch import Batch
from sinks.writer import Fenced, Offsets, Reconnecting, Written, write_batch

Done = Callable[[Batch, Written, float], None]


class BatchWriter:
    def __init__(self, connect: Callable[[], psycopg.Connection], on_done: Done) -> None:
        self._db = Reconnecting(connect)
        self._on_done = on_done
        self._queue: queue.Queue[tuple[Batch, Offsets] | None] = queue.Queue(maxsize=1)
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="sink-writer", daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        return self.error is not None

    def busy(self) -> bool:
        """A batch is being written or waits to be."""
        return self._queue.unfinished_tasks > 0

    def submit(self, batch: Batch, expected: Offsets) -> None:
        """Queue `batch`; `expected` is the stored offset each of its partitions must have."""
        self._queue.put((batch, expected))

    def drain(self) -> Exception | None:
        """Wait until every queued batch is written or skipped; return and clear the error."""
        self._queue.join()
        error, self.error = self.error, None
        return error

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(30)
        self._db.close()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if self.error is None:
                    self._write(*item)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _write(self, batch: Batch, expected: Offsets) -> None:
        started = time.perf_counter()
        try:
            written = write_batch(self._db.get(), batch, expected)
        except Exception as exc:  # noqa: BLE001 - any failure means: resync and retry
            self.error = exc
            if not isinstance(exc, Fenced):
                self._db.close()
            return
        self._on_done(batch, written, time.perf_counter() - started)
