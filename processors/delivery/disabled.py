"""Endpoints disabled after a 410 Gone, shared by every delivery instance.

The table lives in the compacted topic `delivery.disabled`: each instance reads it to its end
at start and then follows it, so a 410 seen by one instance stops the others (and survives a
restart on a fresh machine). A row is keyed by sha256(endpoint key, url): neither the secret
nor the url (which may itself carry a token) is written anywhere. A changed url is a new key,
so the endpoint is tried again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from plumbing.topic_admin import ensure_topics
from processors.delivery.kafka_io import partitions
from processors.delivery.routing import Endpoint
from schemas.settings import Settings
from schemas.topics import DELIVERY_DISABLED, TOPICS, topic_name

log = logging.getLogger(__name__)


def row_key(ep: Endpoint) -> str:
    """The endpoint's key in the table: a hash of what identifies it, never of its secret."""
    return hashlib.sha256(f"{ep.key}\n{ep.url}".encode()).hexdigest()


class DisabledTable:
    """In memory only without settings (unit tests); else backed by `delivery.disabled`."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self._rows: dict[str, dict[str, Any]] = {}  # written by the follower thread; GIL-atomic
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    def start(self, timeout: float = 30.0) -> DisabledTable:
        """Read the topic to its end (so no disabled endpoint is called), then follow it."""
        if self._settings is None:
            return self
        ensure_topics(self._settings, [TOPICS[DELIVERY_DISABLED]])
        self._topic = topic_name(DELIVERY_DISABLED, self._settings)
        self._producer = Producer(
            {"bootstrap.servers": self._settings.kafka_bootstrap_servers, "acks": "all"}
        )
        self._consumer = _reader(self._settings)
        self._catch_up(time.monotonic() + timeout)
        self._thread = threading.Thread(target=self._follow, name="delivery-disabled", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self._consumer:
            self._consumer.close()
        if self._producer:
            self._producer.flush(5)

    def disable(self, ep: Endpoint, reason: str) -> None:
        """Effective here at once; the others follow the topic (a lost write only means the
        next message gets the 410 again)."""
        key = row_key(ep)
        row = {"endpoint": ep.key, "reason": reason, "at": int(time.time() * 1000)}
        self._rows[key] = row
        if not self._producer:
            return
        try:
            self._producer.produce(self._topic, key=key.encode(), value=json.dumps(row).encode())
        except BufferError:
            log.warning("disabled endpoint not shared: producer queue full", extra={"endpoint": ep.key})
        self._producer.poll(0)

    def is_disabled(self, ep: Endpoint) -> bool:
        return row_key(ep) in self._rows

    def rows(self) -> dict[str, dict[str, Any]]:
        return dict(self._rows)

    def _catch_up(self, deadline: float) -> None:
        parts = partitions(self._consumer, self._topic, max(1.0, deadline - time.monotonic()))
        tps = [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in parts]
        self._consumer.assign(tps)
        ends = {tp.partition: self._end(tp, deadline) for tp in tps}
        while any(self._position(p) < end for p, end in ends.items() if end is not None):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._topic} not read to its end")
            self._poll()

    def _end(self, tp: TopicPartition, deadline: float) -> int | None:
        """The partition's high watermark; None when it is empty. Retried: a topic just
        created may not have a leader yet."""
        while True:
            try:
                low, high = self._consumer.get_watermark_offsets(tp, timeout=5)
                return high if high > low else None
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _position(self, partition: int) -> int:
        (tp,) = self._consumer.position([TopicPartition(self._topic, partition)])
        return tp.offset

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
                self._producer.poll(0)
            except Exception:  # keep following; a row missed now is re-learnt from a 410
                log.exception("reading %s failed", DELIVERY_DISABLED)

    def _poll(self) -> None:
        for msg in self._consumer.consume(100, 0.2):
            if msg.error() or msg.key() is None:
                continue
            key = msg.key().decode()
            if msg.value() is None:  # tombstone: enabled again
                self._rows.pop(key, None)
                continue
            try:
                self._rows[key] = json.loads(msg.value())
            except ValueError:
                log.error("unreadable %s record skipped", DELIVERY_DISABLED, extra={"key": key})


def _reader(settings: Settings) -> Consumer:
    """A group-less reader (assign, never commit): every instance reads the whole table."""
    return Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"delivery-disabled-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
        }
    )
