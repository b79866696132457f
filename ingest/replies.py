"""Synchronous replies (?wait=true) over Kafka: request-reply without a database.

The event carries `reply_to` = this instance's id. Each instance tails every partition of
loyalty.results from the end with its own consumer (no group, no commits) and completes the
futures waiting for an event id; results addressed to other instances are skipped. The consumer
starts with the worker's first ?wait=true request (OnDemand): tailing every instance's results
costs a worker about 36 us of CPU per result going by (at 1,000 results/s, librdkafka's fetches
26 us, the Python loop 8 us), which a worker that is never asked to wait should not pay. For the
same reason it stops again once no request has needed it for `IDLE_STOP_S` (and none waits),
and the next one starts it anew.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from plumbing.producer import Unavailable
from schemas.codec import CodecError, default_codec
from schemas.settings import Settings
from schemas.topics import LOYALTY_RESULTS, topic_name

log = logging.getLogger(__name__)
IDLE_STOP_S = 300.0  # a tail no request has needed for this long stops (OnDemand)


class ReplyHub:
    """Futures waiting for results, by event id; safe to complete from any thread."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future]]] = defaultdict(list)
        self._lock = threading.Lock()

    def register(self, event_id: str) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._waiting[event_id].append((loop, future))
        return future

    def waiting(self) -> bool:
        """Some request still waits for a result."""
        with self._lock:
            return bool(self._waiting)

    def forget(self, event_id: str, future: asyncio.Future) -> None:
        with self._lock:
            waiters = self._waiting.get(event_id, [])
            waiters[:] = [(lp, f) for lp, f in waiters if f is not future]
            if not waiters:
                self._waiting.pop(event_id, None)

    def complete(self, event_id: str, result: dict[str, Any]) -> None:
        with self._lock:
            waiters = self._waiting.pop(event_id, [])
        for loop, future in waiters:
            loop.call_soon_threadsafe(_settle, future, result)

    async def wait(self, future: asyncio.Future, event_id: str, timeout: float) -> dict | None:
        """The result, or None when the timeout passes first."""
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self.forget(event_id, future)


def _settle(future: asyncio.Future, result: dict[str, Any]) -> None:
    if not future.done():
        future.set_result(result)


def _command_id(result: dict[str, Any]) -> str | None:
    try:
        return orjson.loads(result.get("detail") or "{}").get("command_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None


class TopicTail:
    """Tails every partition of one topic from its end with a consumer of its own (no group,
    no commits: each worker reads everything written after it started) and hands each value to
    `handle` on its thread. A subclass picks the records addressed to this worker."""

    topic = ""  # the logical topic name
    batch = 500

    def __init__(self, settings: Settings, instance_id: str, hub: ReplyHub) -> None:
        self.settings = settings
        self.instance_id = instance_id
        self.hub = hub
        self._running = False
        self.stopped = False  # ended by `idle` (its owner starts a new one when needed)
        self.idle: Callable[[], bool] | None = None  # asked between reads: stop now?
        name = type(self).__name__
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": f"ingest-{name}-{instance_id}-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "isolation.level": "read_committed",  # a record counts once its transaction commits
                "fetch.wait.max.ms": 10,
            }
        )
        self._thread = threading.Thread(target=self._loop, name=f"ingest-{name}", daemon=True)

    def start(self, timeout: float = 10.0) -> TopicTail:
        """Assign every partition at its current end before any request may wait on it."""
        topic = topic_name(self.topic, self.settings)
        meta = self._consumer.list_topics(topic, timeout=timeout).topics[topic]
        if meta.error is not None:
            raise RuntimeError(f"topic {topic}: {meta.error}")
        assignment = []
        for p in sorted(meta.partitions):
            _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            assignment.append(TopicPartition(topic, p, high))
        self._consumer.assign(assignment)
        self._running = True
        self._thread.start()
        return self

    def close(self) -> None:
        self._running = False
        if self._thread.is_alive():
            self._thread.join(5)
        self._consumer.close()

    def _loop(self) -> None:
        while self._running:
            for msg in self._consumer.consume(self.batch, 0.1):
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("reply consumer error",
                                    extra={"topic": self.topic, "kafka_error": str(msg.error())})  # fmt: skip
                    continue
                self.handle(msg.value())
            if self.idle is not None and self.idle():
                self._consumer.unassign()  # no more fetches, nor their buffered records
                log.info("reply consumer stopped: idle", extra={"topic": self.topic})
                return

    def handle(self, value: bytes | None) -> None:
        raise NotImplementedError


class OnDemand:
    """A worker's TopicTail, started by the first request that needs it, stopped once no
    request has needed it for `idle_stop_s` and none waits, started again by the next one.
    `make` None: nothing to start (unit tests complete the hub themselves)."""

    def __init__(self, make: Callable[[], TopicTail] | None, idle_stop_s: float = IDLE_STOP_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.make = make
        self.idle_stop_s = idle_stop_s
        self.clock = clock
        self.tail: TopicTail | None = None
        self._lock = asyncio.Lock()
        # between a request's use and the tail's idle check: a tail found running here cannot
        # stop until idle_stop_s after this use, so the caller's reply is read
        self._guard = threading.Lock()
        self._used = 0.0

    async def started(self, what: str) -> None:
        """Return once the tail reads from the topic's current end (so a reply to a record
        produced after this is seen); Unavailable when it cannot start (asked again next time)."""
        if self.make is None or self._use():
            return
        async with self._lock:
            if self._use():
                return
            if self.tail is not None:  # stopped while idle: its thread has ended
                await asyncio.to_thread(self.tail.close)
                self.tail = None
            tail = self.make()
            tail.idle = self._idle
            with self._guard:
                self._used = self.clock()
            try:
                self.tail = await asyncio.to_thread(tail.start)
            except Exception as exc:  # no broker or no topic
                tail.close()
                raise Unavailable(f"cannot read {what}: {exc}") from None

    def _use(self) -> bool:
        """Mark a use of a running tail (True), or say there is none (False)."""
        with self._guard:
            if self.tail is None or self.tail.stopped:
                return False
            self._used = self.clock()
            return True

    def _idle(self) -> bool:
        """The tail's question between reads: stop now (and be marked stopped)?"""
        with self._guard:
            tail = self.tail
            if tail is None or self.clock() - self._used < self.idle_stop_s or tail.hub.waiting():
                return False
            tail.stopped = True
            return True

    def close(self) -> None:
        if self.tail is not None:
            self.tail.close()
            self.tail = None


class ResultListener(TopicTail):
    """Tails loyalty.results and hands results addressed to us to the hub."""

    topic = LOYALTY_RESULTS

    def __init__(self, settings: Settings, instance_id: str, hub: ReplyHub) -> None:
        super().__init__(settings, instance_id, hub)
        self._needle = instance_id.encode()
        self._codec = default_codec()

    def handle(self, value: bytes | None) -> None:
        if value is None or self._needle not in value:
            return  # cheap skip: results for other instances never get decoded
        try:
            result = self._codec.decode(value, "Result")
        except CodecError:
            return
        if result.get("reply_to") == self.instance_id:
            self.hub.complete(result["event_id"], result)
            # fulfil/cancel/reverse results carry the target event's id; the caller waits on
            # the command's own id, which the processor puts in detail.command_id
            command_id = _command_id(result)
            if command_id and command_id != result["event_id"]:
                self.hub.complete(command_id, result)
