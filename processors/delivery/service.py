"""`loyalty process delivery`: webhooks and destinations over HTTP.

One consumer (group `delivery`) reads notifications, journeys.activity, the event topics,
audiences.membership and every retry tier topic. Work fans out to per-endpoint lanes; a retry
message is held (partition paused and rewound) until its not_before time, which on a tier topic
is always write time + that tier's delay, so a held partition head never blocks a due message.
A record whose endpoint's lane is full is held the same way until the lane is down to its low
water (backpressure; the lane sheds to a retry tier only once it stays full for max_block_s).
Offsets are committed only up to the lowest unfinished message, so a kill re-sends but never
loses a delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message, TopicPartition

from plumbing.kafka_util import check_consumer_error
from plumbing.observability import (
    DEAD_LETTERS,
    PORT_HELP,
    HealthServer,
    LagReport,
    metrics_port,
    position_lags,
)
from plumbing.topic_admin import ensure_topics
from processors.delivery import metrics
from processors.delivery.disabled import DisabledTable
from processors.delivery.dispatcher import Dispatcher
from processors.delivery.http import AiohttpClient
from processors.delivery.kafka_io import RETRY_PREFIX, KafkaOutbox, consumer, value_schema
from processors.delivery.offsets import OffsetTracker
from processors.delivery.policy import parse_duration, tiers
from processors.delivery.routing import (
    INPUT_TOPICS,
    JOURNEYS_ACTIVITY,
    NOTIFICATIONS,
    check_notification,
    destination_item,
    destination_targets,
    endpoint_key,
    endpoints,
    fan_out,
    journey_notification,
    webhook_targets,
)
from processors.delivery.sender import Deliverer
from processors.runtime.dead_letters import DECODE_ERRORS, DeadLetter, Tombstone, ensure_dlq_topic
from schemas.codec import decode
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import TopicSpec, base_name, topic_name

INPUT_DLQ = "delivery.input.dlq"  # records delivery cannot decode or route (see _dead_letter)

log = logging.getLogger(__name__)


@dataclass
class Options:
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
    """Run with `run()` (blocking, signal-aware) or `start()`/`stop()` (background thread)."""

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
        self._held: dict[tuple[str, int], object] = {}  # paused partitions: a token per hold
        self._topics: list[str] = []
        self.tracker = OffsetTracker()
        self.disabled = DisabledTable(settings)
        # a record delivery cannot decode or route: its own dead letters (delivery.dlq holds
        # webhooks that exhausted their retries, a different thing)
        self.input_dlq = topic_name(INPUT_DLQ, settings)
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

    # main loop -------------------------------------------------------------------------

    def program(self) -> Program:
        if self._program_source:
            return self._program_source()
        return self._table.current()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._request_stop)
        if self._program_source is None:
            from plumbing.config_table import ProgramTable

            self._table = await asyncio.to_thread(ProgramTable(self.settings).start)
        _remove_legacy_table(self.options.state_dir)
        await asyncio.to_thread(self.disabled.start)
        http = (
            HealthServer(self.options.metrics_port, self.healthy).start()
            if self.options.metrics_port is not None
            else None
        )
        await asyncio.to_thread(ensure_dlq_topic, self.settings, self.input_dlq)
        outbox = self.outbox = KafkaOutbox(self.settings, self._loop)
        client = AiohttpClient()
        deliverer = Deliverer(
            client,
            outbox,
            self.program,
            self.disabled,
            max_retry_after_s=self.settings.delivery_max_retry_after_s,
        )
        self.dispatcher = Dispatcher(
            deliverer,
            lambda: self.program().delivery.max_concurrency_per_endpoint,
            self.options.max_queue_per_endpoint,
            self.options.max_block_s,
        )
        self.group = self.options.group_id or topic_name("delivery", self.settings)
        self.consumer = consumer(self.settings, self.group, self.options.instance_id)
        pool = _single_thread()
        try:
            await self._subscribe()
            self._ready.set()
            log.info("delivery service started", extra={"group": self.group})
            await self._consume_until_stopped(pool)
            await self.dispatcher.drain(self.options.drain_timeout_s)
            self._commit(asynchronous=False)
        finally:
            self.dispatcher.close()
            await client.close()
            await asyncio.to_thread(outbox.close)
            await asyncio.to_thread(self.disabled.stop)
            await self._loop.run_in_executor(pool, self.consumer.close)
            pool.shutdown()
            if self._table:
                self._table.stop()
            if http:
                http.stop()
            log.info("delivery service stopped")

    async def _consume_until_stopped(self, pool: Any) -> None:
        last_commit = last_lag = time.monotonic()
        lag = LagReport("delivery")
        program = self.program()
        while not self._stopping:
            if self.program() is not program:
                program = self.program()
                await self._resubscribe()
            metrics.IN_FLIGHT.set(self.tracker.in_flight())
            if self.tracker.in_flight() >= self.options.max_in_flight:
                await asyncio.sleep(0.05)
            else:
                msgs = await self._loop.run_in_executor(pool, self._fetch)
                for msg in msgs:
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

    async def _resubscribe(self) -> None:
        """After a program change; a failure keeps the old subscription (logged)."""
        try:
            await self._subscribe()
        except Exception:
            log.exception("retry tier topics not subscribed; keeping the previous tiers")

    async def _subscribe(self) -> None:
        """(Re)subscribe to the inputs plus the retry topics of the configured tiers."""
        tier_topics = [t.topic for t in tiers(self.program().delivery)]
        wanted = [*INPUT_TOPICS, *tier_topics]
        if wanted == self._topics:
            return
        specs = [TopicSpec(t, "Notification") for t in tier_topics]
        await asyncio.to_thread(ensure_topics, self.settings, specs)
        physical = [topic_name(t, self.settings) for t in wanted]
        await asyncio.to_thread(self._await_metadata, physical)
        self.consumer.subscribe(physical, on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._topics = wanted

    def _await_metadata(self, topics: list[str], timeout: float = 15.0) -> None:
        """Wait until fresh topics show up in metadata: subscribing earlier leaves them
        unassigned until the next metadata refresh."""
        deadline = time.monotonic() + timeout
        for topic in topics:
            while time.monotonic() < deadline:
                meta = self.consumer.list_topics(topic, timeout=5).topics.get(topic)
                if meta and meta.error is None and meta.partitions:
                    break
                time.sleep(0.1)

    def _on_assign(self, _consumer: Any, parts: list[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"count": len(parts)})

    def _on_revoke(self, _consumer: Any, parts: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in parts]
        self._loop.call_soon_threadsafe(self._revoked, tps)

    def _revoked(self, tps: list[tuple[str, int]]) -> None:
        """Forget revoked partitions' offsets and holds: assigned again, a partition starts
        unpaused at its committed offset, and a stale hold would skip its records."""
        self.tracker.forget(tps)
        for tp in tps:
            self._held.pop(tp, None)

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

    # routing ---------------------------------------------------------------------------

    def _handle(self, msg: Message) -> None:
        if msg.error():
            check_consumer_error(msg.error())  # ConsumerFailed ends delivery for a restart
            log.warning("consume error: %s", msg.error())
            return
        tp = (msg.topic(), msg.partition())
        if tp in self._held:
            return  # rewound: re-fetched after the hold
        base = base_name(msg.topic(), self.settings)
        try:
            if msg.value() is None:
                raise Tombstone("record without a value (tombstone)")
            value = decode(msg.value(), value_schema(base))
        except DECODE_ERRORS as exc:
            self._dead_letter(msg, "undecodable", exc)
            return
        if base.startswith(RETRY_PREFIX) and self._hold(msg, value, base):
            return
        try:
            jobs, items = self._targets(base, value)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop delivery
            self._dead_letter(msg, "processing", exc)
            return
        full = next((k for k in [*(k for k, _ in jobs), *(ep.key for ep, _ in items)]
                     if self.dispatcher.blocked(k)), None)  # fmt: skip
        if full:
            self._wait(msg, full)
            return
        came_from = base[len(RETRY_PREFIX) :] if base.startswith(RETRY_PREFIX) else None
        self.tracker.add(tp, msg.offset(), len(jobs) + len(items))
        done = self._acker(tp, msg.offset())
        for key, note in jobs:
            self.dispatcher.submit(key, note, done, came_from)
        for ep, item in items:
            self.dispatcher.add_item(ep, item, done)

    def _dead_letter(self, msg: Message, reason: str, error: BaseException) -> None:
        """Send `msg`'s bytes to delivery's input DLQ; its offset commits once that is acked."""
        letter = DeadLetter(reason, error, "delivery", msg.topic(), msg.partition(), msg.offset(),
                            self.program().version)  # fmt: skip
        tp = (msg.topic(), msg.partition())
        self.tracker.add(tp, msg.offset(), 1)
        done = self._acker(tp, msg.offset())
        assert self.outbox is not None and self._loop is not None
        send = self.outbox.send_raw(self.input_dlq, msg.key(), msg.value(), letter.headers())
        self._loop.create_task(self._dead_letter_sent(send, letter, done))

    async def _dead_letter_sent(self, send: Any, letter: DeadLetter, done: Callable[[], None]) -> None:
        try:
            await send
        except Exception:  # noqa: BLE001 - not acked: the offset stays, redelivered after restart
            log.exception("dead letter not written; the record stays unacknowledged")
            return
        DEAD_LETTERS.labels("delivery", letter.reason).inc()
        letter.log()
        done()

    def _hold(self, msg: Message, value: dict[str, Any], base: str) -> bool:
        """Pause a retry partition at this message until it is due (no busy loop)."""
        wait_ms = _due_ms(msg, value, base) - int(time.time() * 1000)
        if wait_ms <= 0:
            return False
        tp, token = self._pause_at(msg)
        self._loop.call_later(wait_ms / 1000, self._release, tp, token)
        return True

    def _wait(self, msg: Message, key: str) -> None:
        """Backpressure: pause this record's partition at it until endpoint `key` takes
        records again. Nothing of the record is submitted yet (all its endpoints get it after
        the wait, none twice); the records behind it stay in Kafka, not in memory."""
        tp, token = self._pause_at(msg)
        metrics.BACKPRESSURE.labels(key.split(":", 1)[1]).inc()
        self.dispatcher.wait(key, lambda: self._release(tp, token))

    def _pause_at(self, msg: Message) -> tuple[tuple[str, int], object]:
        """Pause `msg`'s partition and rewind it to `msg`; records of it already fetched are
        skipped (`_held`) and read again after the release."""
        part = TopicPartition(msg.topic(), msg.partition(), msg.offset())
        self.consumer.pause([part])
        self.consumer.seek(part)
        tp = (msg.topic(), msg.partition())
        token = self._held[tp] = object()
        return tp, token

    def _release(self, tp: tuple[str, int], token: object) -> None:
        if self._held.get(tp) is not token:
            return  # revoked meanwhile (and maybe held again since)
        del self._held[tp]
        try:
            self.consumer.resume([TopicPartition(*tp)])
        except Exception as exc:  # revoked meanwhile
            log.info("resume skipped", extra={"error": str(exc)})

    def _acker(self, tp: tuple[str, int], offset: int) -> Callable[[], None]:
        return lambda: self.tracker.done(tp, offset)

    def _targets(self, base: str, value: dict[str, Any]) -> tuple[list, list]:
        """(endpoint key, fanned-out notification) jobs and (destination, item) pairs."""
        program = self.program()
        jobs: list[tuple[str, dict[str, Any]]] = []
        items: list[tuple[Any, dict[str, Any]]] = []
        if base == NOTIFICATIONS or base.startswith(RETRY_PREFIX):
            check_notification(value)
            key = endpoint_key(value)
            if key and base.startswith(RETRY_PREFIX):
                jobs = [(key, value)]
            else:
                jobs = [(ep.key, fan_out(value, ep)) for ep in webhook_targets(program, value)]
        elif base == JOURNEYS_ACTIVITY:
            jobs, items = self._journey(program, value)
        else:
            found = destination_item(base, value)
            if found:
                names, item = found
                items = [(ep, item) for ep in destination_targets(program, names)]
        return jobs, items

    def _journey(self, program: Program, activity: dict[str, Any]) -> tuple[list, list]:
        found = journey_notification(activity)
        if not found:
            return [], []
        kind, note = found
        if kind == "webhook":
            return [(ep.key, fan_out(note, ep)) for ep in webhook_targets(program, note)], []
        item = {"id": note["id"], "type": "journey", "event": note["event"]}
        item |= {"customer_id": note["customer_id"], "data": note["data"]}
        dests = destination_targets(program, {note["event"]})
        if note["endpoint_id"]:
            pinned = endpoints(program).get(f"destination:{note['endpoint_id']}")
            dests = [pinned] if pinned and pinned.enabled else []
        return [], [(ep, item) for ep in dests]


def _due_ms(msg: Message, value: dict[str, Any], base: str) -> int:
    """A retry's not_before, but never later than its write time + its tier's delay.

    Every tier topic holds one delay only (policy.next_step), so FIFO is due order; this bound
    keeps that true for records written otherwise (an older version's uncapped Retry-After), so
    one such record cannot hold the partition for longer than the tier's delay.
    """
    not_before = value.get("not_before") or 0
    kind, written_ms = msg.timestamp()
    try:
        delay_ms = int(parse_duration(base[len(RETRY_PREFIX) :]) * 1000)
    except ValueError:
        return not_before
    if kind == TIMESTAMP_NOT_AVAILABLE or written_ms <= 0:
        return not_before
    return min(not_before, written_ms + delay_ms)


def _remove_legacy_table(state_dir: Path | None) -> None:
    """Older versions kept the disabled endpoints, secrets included, in this file."""
    legacy = state_dir / "disabled-endpoints.json" if state_dir else None
    if legacy and legacy.exists():
        legacy.unlink()
        log.warning("removed %s (it held webhook secrets); the table is now a topic", legacy)


def _single_thread() -> Any:
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(1, thread_name_prefix="delivery-consume")


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="loyalty process delivery")
    parser.add_argument("--state-dir", type=Path, default=Path(".local/state/delivery"))
    parser.add_argument("--instance-id", default=None, help="static group membership id")
    parser.add_argument("--metrics-port", type=int, default=metrics_port(), help=PORT_HELP)
    parser.add_argument("--group", default=None, help="consumer group (default: TOPIC_PREFIX + 'delivery')")
    args = parser.parse_args(argv)
    return Options(
        group_id=args.group,
        instance_id=args.instance_id,
        state_dir=args.state_dir,
        metrics_port=args.metrics_port,
    )


def main(argv: list[str] | None = None) -> int:
    from plumbing.logs import configure_logging

    configure_logging("delivery")
    DeliveryService(Settings.from_env(), options=parse_args(argv or [])).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(__import__("sys").argv[1:]))
