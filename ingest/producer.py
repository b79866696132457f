"""Kafka producer for ingest: acks=all + idempotence; a request is answered only after the
broker acknowledged its write, so a 202 means the event is durable.

librdkafka callbacks run on one poll thread and complete asyncio futures on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import KafkaError, Producer

from schemas.settings import Settings
from schemas.topics import topic_name

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivered:
    topic: str
    partition: int
    offset: int


class Unavailable(Exception):
    """Kafka did not acknowledge in time (answer 503 + Retry-After)."""


class EventProducer(Protocol):
    async def send(self, topic: str, key: str, value: bytes) -> Delivered: ...

    async def send_many(self, messages: list[tuple[str, str, bytes]]) -> list[Delivered | Exception]: ...


class KafkaProducer:
    """Idempotent producer with a poll thread; `send*` await the broker acknowledgement."""

    def __init__(self, settings: Settings, ack_timeout_s: float = 5.0, linger_ms: int = 2) -> None:
        self.settings = settings
        self.ack_timeout_s = ack_timeout_s
        self.linger_ms = linger_ms
        self._running = False
        self._completed: list[tuple[asyncio.AbstractEventLoop, asyncio.Future, object]] = []
        self._topics: dict[str, str] = {}  # logical -> physical topic name
        self._producer = self._create()
        self._thread = threading.Thread(target=self._poll_loop, name="ingest-producer", daemon=True)

    def _create(self) -> Producer:
        return Producer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": self.linger_ms,
                "compression.type": "lz4",
                "partitioner": "murmur2_random",
                "message.timeout.ms": int(self.ack_timeout_s * 1000),
                "queue.buffering.max.messages": 500_000,
                "error_cb": self._on_error,
            }
        )

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("fatal producer error, recreating", extra={"kafka_error": str(err)})
            self._producer = self._create()
        else:
            log.warning("producer error", extra={"kafka_error": str(err)})

    def start(self) -> KafkaProducer:
        self._running = True
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._running = False
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._producer.flush(timeout)

    def _poll_loop(self) -> None:
        """Serve delivery callbacks, then wake each event loop once per poll, not per message."""
        while self._running:
            self._producer.poll(0.05)
            if self._completed:
                completed, self._completed = self._completed, []
                by_loop: dict[asyncio.AbstractEventLoop, list] = {}
                for loop, future, outcome in completed:
                    by_loop.setdefault(loop, []).append((future, outcome))
                for loop, items in by_loop.items():
                    loop.call_soon_threadsafe(_settle_all, items)

    def _complete(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future, outcome) -> None:
        self._completed.append((loop, future, outcome))  # only called on the poll thread

    def _try_produce(self, topic: str, key: str, value: bytes, callback) -> bool:
        """Hand one message to librdkafka; False when its queue is full (then see _produce)."""
        physical = self._topics.get(topic)
        if physical is None:
            physical = self._topics[topic] = topic_name(topic, self.settings)
        try:
            self._producer.produce(physical, value, key.encode(), on_delivery=callback)
        except BufferError:
            return False
        return True

    async def _produce(self, topic: str, key: str, value: bytes, callback) -> None:
        """Produce, waiting while the queue is full; Unavailable after ack_timeout_s."""
        deadline = time.monotonic() + self.ack_timeout_s
        while not self._try_produce(topic, key, value, callback):
            if time.monotonic() > deadline:
                raise Unavailable("producer queue full")
            await asyncio.sleep(0.005)

    async def send(self, topic: str, key: str, value: bytes) -> Delivered:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivered] = loop.create_future()

        def delivered(err: KafkaError | None, msg) -> None:
            self._complete(loop, future, _outcome(err, msg))

        await self._produce(topic, key, value, delivered)
        return _unwrap(await self._await(future))

    async def send_many(self, messages: list[tuple[str, str, bytes]]) -> list[Delivered | Exception]:
        """Produce a batch; one future for the whole batch keeps the overhead per event tiny."""
        if not messages:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list] = loop.create_future()
        results: list[Delivered | Exception | None] = [None] * len(messages)
        pending = [len(messages)]
        lock = threading.Lock()

        def done(count: int) -> bool:
            with lock:
                pending[0] -= count
                return pending[0] == 0

        def callback_for(index: int):
            def delivered(err: KafkaError | None, msg) -> None:
                results[index] = _outcome(err, msg)
                if done(1):
                    self._complete(loop, future, results)

            return delivered

        for i, (topic, key, value) in enumerate(messages):
            callback = callback_for(i)
            if self._try_produce(topic, key, value, callback):
                continue  # the common case, without a coroutine per message
            try:
                await self._produce(topic, key, value, callback)
            except Unavailable as exc:
                for j in range(i, len(messages)):
                    results[j] = exc
                if done(len(messages) - i):
                    return results
                break
        try:
            return await self._await(future)
        except Unavailable as exc:
            return [r if r is not None else exc for r in results]

    async def _await(self, future: asyncio.Future):
        """The future's result, or Unavailable after the ack deadline (a timer, not wait_for:
        no extra task per request on the hot path)."""
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.ack_timeout_s + 1.0, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()


def _outcome(err: KafkaError | None, msg) -> Delivered | Exception:
    if err is not None:
        return Unavailable(f"Kafka delivery failed: {err.str()}")
    return Delivered(msg.topic(), msg.partition(), msg.offset())


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(Unavailable("Kafka did not acknowledge in time"))


def _settle_all(items: list[tuple[asyncio.Future, object]]) -> None:
    for future, outcome in items:
        _settle(future, outcome)


def _settle(future: asyncio.Future, outcome) -> None:
    if not future.done():
        future.set_result(outcome)


def _unwrap(outcome: Delivered | Exception) -> Delivered:
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
