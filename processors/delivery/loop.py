"""Delivery's consume loop: read, route, hand to per-endpoint lanes, commit what is finished.

One consumer (group `delivery`) reads notifications, journeys.activity, the event topics,
audiences.membership and every retry tier topic (subscription.py). Each record is decoded and
routed (routing.py) to endpoint lanes (dispatcher.py). A retry record not yet due, and a record
whose endpoint's lane is full, hold their partition at them (holds.py) instead of being kept in
memory. Offsets are committed only up to the lowest unfinished record (offsets.py), so a kill
re-sends but never loses a delivery. Delivery is its own loop rather than a runtime processor:
an HTTP call cannot join a Kafka transaction (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Message, TopicPartition

from plumbing.kafka_util import check_consumer_error
from plumbing.observability import HealthServer, LagReport, position_lags
from processors.delivery import metrics
from processors.delivery.disabled import DisabledTable
from processors.delivery.dispatcher import Dispatcher
from processors.delivery.holds import Holds
from processors.delivery.http import AiohttpClient
from processors.delivery.input_dlq import InputDeadLetters
from processors.delivery.kafka_io import KafkaOutbox, consumer, value_schema
from processors.delivery.offsets import TP, OffsetTracker
from processors.delivery.policy import tier_of
from processors.delivery.routing import Item, Job, targets, unrouted
from processors.delivery.sender import Deliverer
from processors.delivery.subscription import Subscription
from processors.runtime.dead_letters import DECODE_ERRORS, DeadLetter, Tombstone
from schemas.codec import decode
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import base_name, topic_name

log = logging.getLogger(__name__)


@dataclass
class Options:
    """How one delivery instance runs (the CLI sets the first four, tests tune the rest)."""

    group_id: str | None = None  # default: TOPIC_PREFIX + "delivery"
    instance_id: str | None = None
    state_dir: Path | None = None
    metrics_port: int | None = None
    commit_interval_s: float = 0.2
    max_in_flight: int = 20_000
    max_queue_per_endpoint: int = 1_000  # a full lane pauses its records' partitions
    max_block_s: float = 10.0  # ... for at most this long, then its overflow goes to retry tiers
    drain_timeout_s: float = 10.0
    lag_interval_s: float = 5.0  # consumer_lag refresh (cached watermarks: no broker call)


class DeliveryService:
    """Run with `run()` (blocking, signal-aware) or `start()`/`stop()` (background thread).

    `program` replaces the `program.config` table (tests and benchmarks pass a fixed program)."""

    def __init__(
        self,
        settings: Settings,
        program: Callable[[], Program] | None = None,
        options: Options | None = None,
    ) -> None:
        self.settings = settings
        self.options = options or Options()
        self._program_source = program
        self._table: Any = None
        self._stopping = False
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.tracker = OffsetTracker()
        self.disabled = DisabledTable(settings)
        self.outbox: KafkaOutbox | None = None

    # lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> DeliveryService:
        self._thread = threading.Thread(target=self.run, name="delivery", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("delivery service did not start")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop:
            self._loop.call_soon_threadsafe(self._request_stop)
        if self._thread:
            self._thread.join(timeout)

    def run(self) -> None:
        asyncio.run(self._main())

    def _request_stop(self) -> None:
        self._stopping = True

    def healthy(self) -> bool:
        return self._ready.is_set() and not self._stopping

    def program(self) -> Program:
        if self._program_source:
            return self._program_source()
        return self._table.current()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._request_stop)
        await self._open()
        try:
            await self.subscription.update(self.program())
            self._ready.set()
            log.info("delivery service started", extra={"group": self.group})
            await self._consume_until_stopped()
            await self.dispatcher.drain(self.options.drain_timeout_s)
            self._commit(asynchronous=False)
        finally:
            await self._close()
            log.info("delivery service stopped")

    async def _open(self) -> None:
        """Everything the loop needs, in dependency order: the program and the disabled table
        first (routing and sending read them), the consumer last."""
        if self._program_source is None:
            from plumbing.config_table import ProgramTable

            self._table = await asyncio.to_thread(ProgramTable(self.settings).start)
        _remove_legacy_table(self.options.state_dir)
        await asyncio.to_thread(self.disabled.start)
        port = self.options.metrics_port
        self._http = HealthServer(port, self.healthy).start() if port is not None else None
        self.outbox = KafkaOutbox(self.settings)
        self.dead_letters = InputDeadLetters(self.settings, self.outbox)
        await asyncio.to_thread(self.dead_letters.ensure_topic)
        self._client = AiohttpClient()
        deliverer = Deliverer(self._client, self.outbox, self.program, self.disabled,
                              max_retry_after_s=self.settings.delivery_max_retry_after_s)  # fmt: skip
        self.dispatcher = Dispatcher(
            deliverer,
            lambda: self.program().delivery.max_concurrency_per_endpoint,
            self.options.max_queue_per_endpoint,
            self.options.max_block_s,
        )
        self.group = self.options.group_id or topic_name("delivery", self.settings)
        self.consumer = consumer(self.settings, self.group, self.options.instance_id)
        self.holds = Holds(self.consumer, self._loop)
        self.subscription = Subscription(self.settings, self.consumer, self._on_revoke)
        # consumer calls block: one thread of their own keeps them off the event loop, in order
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="delivery-consume")

    async def _close(self) -> None:
        self.dispatcher.close()
        await self._client.close()
        await asyncio.to_thread(self.outbox.close)
        await asyncio.to_thread(self.disabled.stop)
        await self._loop.run_in_executor(self._pool, self.consumer.close)
        self._pool.shutdown()
        if self._table:
            self._table.stop()
        if self._http:
            self._http.stop()

    # the loop --------------------------------------------------------------------------

    async def _consume_until_stopped(self) -> None:
        last_commit = last_lag = time.monotonic()
        lag = LagReport("delivery")
        program = self.program()
        while not self._stopping:
            if self.program() is not program:
                program = self.program()
                await self.subscription.follow(program)
            metrics.IN_FLIGHT.set(self.tracker.in_flight())
            if self.tracker.in_flight() >= self.options.max_in_flight:
                await asyncio.sleep(0.05)
            else:
                for msg in await self._loop.run_in_executor(self._pool, self._fetch):
                    self._handle(msg)
            if time.monotonic() - last_commit >= self.options.commit_interval_s:
                self._commit(asynchronous=True)
                last_commit = time.monotonic()
            if time.monotonic() - last_lag >= self.options.lag_interval_s:
                lag.update(position_lags(self.consumer, self.settings))
                last_lag = time.monotonic()
        lag.update({})  # stopped: it owns no partition any more

    def _fetch(self, most: int = 500, wait_s: float = 0.1) -> list[Message]:
        """The next messages as soon as one is there, with whatever else is already fetched.
        consume(most, wait_s) alone waits out wait_s unless `most` arrive: at a few hundred
        webhooks/s that added up to 100 ms to every delivery (bench/e2e.py)."""
        first = self.consumer.poll(wait_s)
        if first is None:
            return []
        return [first, *self.consumer.consume(most - 1, 0)]

    def _commit(self, asynchronous: bool) -> None:
        offsets = self.tracker.committable()
        if not offsets:
            return
        parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self.consumer.commit(offsets=parts, asynchronous=asynchronous)
            self.tracker.mark_committed(offsets)
        except Exception as exc:  # e.g. a rebalance in progress: the next commit covers it
            log.warning("offset commit failed", extra={"error": str(exc)})

    def _on_revoke(self, _consumer: Any, parts: list[TopicPartition]) -> None:
        """Called on the consumer's thread, inside poll: the bookkeeping is the loop's."""
        tps = [(p.topic, p.partition) for p in parts]
        self._loop.call_soon_threadsafe(self._revoked, tps)

    def _revoked(self, tps: list[TP]) -> None:
        """Forget revoked partitions' offsets and holds: assigned again, a partition starts
        unpaused at its committed offset."""
        self.tracker.forget(tps)
        self.holds.forget(tps)

    # one record ------------------------------------------------------------------------

    def _handle(self, msg: Message) -> None:
        """Decode, hold until due (retries), route, then queue for every endpoint or none. A
        record no endpoint can get (an event while no destination is enabled) is only counted
        as finished: it is not decoded, so an undecodable one is not dead-lettered either."""
        if msg.error():
            check_consumer_error(msg.error())  # ConsumerFailed ends delivery for a restart
            log.warning("consume error: %s", msg.error())
            return
        if self.holds.held(msg):
            return  # rewound: re-fetched after the hold
        topic = base_name(msg.topic(), self.settings)
        if unrouted(self.program(), topic):  # nothing to deliver: not even decoded
            self.tracker.add((msg.topic(), msg.partition()), msg.offset(), 0)
            return
        value = self._decode(msg, topic)
        tier = tier_of(topic)
        if value is None or (tier is not None and self.holds.until_due(msg, value, tier)):
            return
        try:
            jobs, items = targets(self.program(), topic, value)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop delivery
            self._dead_letter(msg, "processing", exc)
            return
        full = self._full_endpoint(jobs, items)
        if full:
            self._wait(msg, full)
            return
        done = self._track(msg, len(jobs) + len(items))
        for key, note in jobs:
            self.dispatcher.submit(key, note, done, tier)
        for ep, item in items:
            self.dispatcher.add_item(ep, item, done)

    def _decode(self, msg: Message, topic: str) -> dict[str, Any] | None:
        """The record's value; None when it cannot be decoded (then it is dead-lettered)."""
        try:
            if msg.value() is None:
                raise Tombstone("record without a value (tombstone)")
            return decode(msg.value(), value_schema(topic))
        except DECODE_ERRORS as exc:
            self._dead_letter(msg, "undecodable", exc)
            return None

    def _full_endpoint(self, jobs: list[Job], items: list[Item]) -> str | None:
        """The first of the record's endpoints whose lane is full (the record must wait)."""
        keys = [*(key for key, _ in jobs), *(ep.key for ep, _ in items)]
        return next((key for key in keys if self.dispatcher.blocked(key)), None)

    def _wait(self, msg: Message, key: str) -> None:
        """Backpressure: hold this record's partition at it until endpoint `key` takes records
        again. Nothing of the record is submitted yet (all its endpoints get it after the wait,
        none twice); the records behind it stay in Kafka, not in memory."""
        release = self.holds.hold(msg)
        metrics.BACKPRESSURE.labels(key.split(":", 1)[1]).inc()
        self.dispatcher.wait(key, release)

    def _dead_letter(self, msg: Message, reason: str, error: BaseException) -> None:
        """Send `msg`'s bytes to delivery's input DLQ; its offset commits once that is acked."""
        letter = DeadLetter(reason, error, "delivery", msg.topic(), msg.partition(), msg.offset(),
                            self.program().version)  # fmt: skip
        done = self._track(msg, 1)
        self._loop.create_task(self.dead_letters.send(msg, letter, done))

    def _track(self, msg: Message, jobs: int) -> Callable[[], None]:
        """Register `jobs` unfinished jobs for `msg`; each calls the returned `done` once."""
        tp, offset = (msg.topic(), msg.partition()), msg.offset()
        self.tracker.add(tp, offset, jobs)
        return lambda: self.tracker.done(tp, offset)


def _remove_legacy_table(state_dir: Path | None) -> None:
    """Older versions kept the disabled endpoints, secrets included, in this file."""
    legacy = state_dir / "disabled-endpoints.json" if state_dir else None
    if legacy and legacy.exists():
        legacy.unlink()
        log.warning("removed %s (it held webhook secrets); the table is now a topic", legacy)
