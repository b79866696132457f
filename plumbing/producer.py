"""An asyncio-friendly confluent-kafka producer: `await send(...)` returns once the broker
acknowledged the write (acks=all, idempotent), so a caller answers or commits only after its
record is durable. Ingest answers its 202s with it; delivery writes retries, dead letters and
attempt records with it.

librdkafka serves delivery callbacks on one poll thread; the thread settles the asyncio futures
and wakes each event loop once per poll, not once per message. With `poll_on_loop` (ingest's hot
path) there is no poll thread: the event loop that sends polls every `poll_tick_s` while
messages are in flight (every IDLE_TICK_S otherwise, for error callbacks) and settles the futures
itself, which saves the thread's GIL hand-offs and wake-ups: 15-25 us of CPU per single-event
request. Each tick is a loop wake-up of its own, so ingest ticks every half linger (no ack comes
sooner): with a 5 ms linger, 1 ms ticks cost about 20 us more per request than 2.5 ms ticks at
1,000 req/s (docs/benchmarks.md#ingest-benchingestpy).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, Producer

from schemas.settings import Settings
from schemas.topics import topic_name

log = logging.getLogger(__name__)
POLL_TICK_S = 0.001  # poll_on_loop's default tick: the wait added to an acknowledgement, at most
IDLE_TICK_S = 0.5
Key = str | bytes | None
Headers = list[tuple[str, bytes]] | None


@dataclass(frozen=True, slots=True)
class Delivered:
    topic: str
    partition: int
    offset: int


class Unavailable(Exception):
    """Kafka did not acknowledge the write (in time, when there is a deadline)."""


class EventProducer(Protocol):
    """What a service awaits; tests pass fakes of it."""

    async def send(self, topic: str, key: Key, value: bytes, headers: Headers = None) -> Delivered: ...

    async def send_many(self, messages: list[tuple[str, Key, bytes]]) -> list[Delivered | Exception]: ...


class AsyncProducer:
    """Idempotent producer with a poll thread. Topics are logical names (TOPIC_PREFIX applied).

    `ack_timeout_s` bounds both the wait for room in a full local queue and the wait for the
    acknowledgement (then `Unavailable`): ingest must answer 503 in time. None waits as long as
    it takes (librdkafka's own message timeout still applies): delivery must not give up on a
    retry or dead letter whose offset it can commit only once it is written.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        ack_timeout_s: float | None = None,
        linger_ms: int = 5,
        config: dict[str, Any] | None = None,
        name: str = "producer",
        poll_on_loop: bool = False,
        poll_tick_s: float = POLL_TICK_S,
    ) -> None:
        self.settings = settings
        self.poll_on_loop = poll_on_loop  # one event loop sends and polls (see the module doc)
        self.poll_tick_s = poll_tick_s  # poll_on_loop: the poll interval while sends are in flight
        self._tick: asyncio.TimerHandle | None = None
        self._tick_loop: asyncio.AbstractEventLoop | None = None
        self._tick_at = 0.0
        self.ack_timeout_s = ack_timeout_s
        self.linger_ms = linger_ms
        self.config = config or {}
        self._running = False
        self._completed: list[tuple[asyncio.AbstractEventLoop, asyncio.Future, object]] = []
        self._topics: dict[str, str] = {}  # logical -> physical topic name
        self._retired: list[Producer] = []  # replaced after a fatal error: their reports still run
        self._producer = self._create()
        self._thread = threading.Thread(target=self._poll_loop, name=name, daemon=True)

    def _create(self) -> Producer:
        conf: dict[str, Any] = {
            "bootstrap.servers": self.settings.kafka_bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": self.linger_ms,
            "partitioner": "murmur2_random",  # Java-compatible: co-partitioned with every topic
            "error_cb": self._on_error,
        }
        if self.ack_timeout_s is not None:
            conf["message.timeout.ms"] = int(self.ack_timeout_s * 1000)
        return Producer(conf | self.config)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():  # an idempotent producer that lost its sequence: it writes nothing more
            log.error("fatal producer error, recreating", extra={"kafka_error": str(err)})
            self._retired.append(self._producer)
            self._producer = self._create()
        else:
            log.warning("producer error", extra={"kafka_error": str(err)})

    def start(self) -> AsyncProducer:
        self._running = True
        if not self.poll_on_loop:
            self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop polling and flush what is queued (bounded by `timeout`)."""
        self._running = False
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._producer.flush(timeout)

    def topic(self, logical: str) -> str:
        physical = self._topics.get(logical)
        if physical is None:
            physical = self._topics[logical] = topic_name(logical, self.settings)
        return physical

    def _poll_loop(self) -> None:
        """Serve delivery callbacks, then wake each event loop once per poll, not per message."""
        while self._running:
            self._serve(0.05, None)

    def _serve(self, timeout: float, here: asyncio.AbstractEventLoop | None) -> None:
        """Poll, then settle the completed futures: directly for the loop `here` (poll_on_loop),
        with one wake-up per loop for the others."""
        self._producer.poll(timeout)
        for old in list(self._retired):  # failed messages of a replaced producer settle too
            old.poll(0)
            if len(old) == 0:
                self._retired.remove(old)
        if self._completed:
            completed, self._completed = self._completed, []
            by_loop: dict[asyncio.AbstractEventLoop, list] = {}
            for loop, future, outcome in completed:
                by_loop.setdefault(loop, []).append((future, outcome))
            for loop, items in by_loop.items():
                if loop is here:
                    _settle_all(items)
                else:
                    loop.call_soon_threadsafe(_settle_all, items)

    def _arm(self, delay: float | None = None) -> None:
        """poll_on_loop: poll within `delay` (default poll_tick_s) on the running loop (no-op
        outside one)."""
        if not self.poll_on_loop or not self._running:
            return
        if delay is None:
            delay = self.poll_tick_s
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        at = loop.time() + delay
        if self._tick is not None:
            if self._tick_loop is loop and self._tick_at <= at:
                return
            self._tick.cancel()
        self._tick, self._tick_loop, self._tick_at = loop.call_at(at, self._on_tick, loop), loop, at

    def _on_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._tick = None
        if not self._running:
            return
        self._serve(0, loop)
        busy = len(self._producer) > 0 or any(len(old) for old in self._retired)
        self._arm(self.poll_tick_s if busy else IDLE_TICK_S)

    def _complete(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future, outcome) -> None:
        self._completed.append((loop, future, outcome))  # only called on the poll thread

    def produce_nowait(self, topic: str, key: Key, value: bytes | None, headers: Headers = None,
                       callback: Callable | None = None) -> bool:  # fmt: skip
        """Hand one message to librdkafka without waiting; False when its queue is full."""
        if isinstance(key, str):
            key = key.encode()
        try:
            self._producer.produce(self.topic(topic), value, key, headers=headers, on_delivery=callback)
        except BufferError:
            self._arm()  # a full queue drains only while someone polls
            return False
        self._arm()
        return True

    async def _produce(self, topic: str, key: Key, value: bytes | None, headers: Headers, callback) -> None:
        """Produce, waiting while the queue is full; Unavailable after ack_timeout_s."""
        deadline = None if self.ack_timeout_s is None else time.monotonic() + self.ack_timeout_s
        while not self.produce_nowait(topic, key, value, headers, callback):
            if deadline is not None and time.monotonic() > deadline:
                raise Unavailable("producer queue full")
            await asyncio.sleep(0.005)

    async def send(self, topic: str, key: Key, value: bytes | None, headers: Headers = None) -> Delivered:
        """Produce one message and await the broker's acknowledgement."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivered] = loop.create_future()

        def delivered(err: KafkaError | None, msg) -> None:
            self._complete(loop, future, _outcome(err, msg))

        await self._produce(topic, key, value, headers, delivered)
        return _unwrap(await self._await(future))

    async def send_many(self, messages: list[tuple[str, Key, bytes]]) -> list[Delivered | Exception]:
        """Produce a batch; one future for the whole batch keeps the overhead per message tiny."""
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
            if self.produce_nowait(topic, key, value, None, callback):
                continue  # the common case, without a coroutine per message
            try:
                await self._produce(topic, key, value, None, callback)
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
        if self.ack_timeout_s is None:
            return await future
        timer = asyncio.get_running_loop().call_later(self.ack_timeout_s + 1.0, _expire, future)
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
        if not future.done():
            future.set_result(outcome)


def _unwrap(outcome: Delivered | Exception) -> Delivered:
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
