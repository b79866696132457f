"""Holding a partition at a record: paused and rewound to it, resumed when its wait is over.

Two waits use it, and neither keeps records in memory or polls:
- a retry tier's head waits until it is due (`until_due`). A tier topic holds messages of one
  delay only (policy.next_step), so its order is due order: nothing behind a held head is due
  earlier, and one endpoint's retries never wait behind another's on a different partition;
- a record whose endpoint's queue is full waits until the queue has drained (backpressure: the
  loop passes `hold(msg)`'s release to the dispatcher).
Records of a held partition that were fetched before the pause are skipped (`held`) and read
again, in order, after the release.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, Message, TopicPartition

from processors.delivery.policy import parse_duration

log = logging.getLogger(__name__)

TP = tuple[str, int]


class Holds:
    """The held partitions of one consumer; every call runs on the event loop's thread."""

    def __init__(self, consumer: Consumer, loop: asyncio.AbstractEventLoop) -> None:
        self._consumer = consumer
        self._loop = loop
        self._held: dict[TP, object] = {}  # a token per hold, so a stale release does nothing

    def held(self, msg: Message) -> bool:
        """Whether `msg` was fetched from a partition held meanwhile (it will be read again)."""
        return (msg.topic(), msg.partition()) in self._held

    def hold(self, msg: Message) -> Callable[[], None]:
        """Pause `msg`'s partition, rewind it to `msg`, and return the release of this hold."""
        part = TopicPartition(msg.topic(), msg.partition(), msg.offset())
        self._consumer.pause([part])
        self._consumer.seek(part)
        tp = (msg.topic(), msg.partition())
        token = self._held[tp] = object()
        return lambda: self._release(tp, token)

    def until_due(self, msg: Message, note: dict[str, Any], tier: str) -> bool:
        """Hold a retry record of `tier` until it is due; False when it is due already."""
        wait_ms = due_ms(msg, note, tier) - int(time.time() * 1000)
        if wait_ms <= 0:
            return False
        self._loop.call_later(wait_ms / 1000, self.hold(msg))
        return True

    def forget(self, tps: list[TP]) -> None:
        """Drop the holds of revoked partitions: assigned again, a partition starts unpaused at
        its committed offset, and a stale hold would skip its records."""
        for tp in tps:
            self._held.pop(tp, None)

    def _release(self, tp: TP, token: object) -> None:
        if self._held.get(tp) is not token:
            return  # revoked meanwhile (and maybe held again since)
        del self._held[tp]
        try:
            self._consumer.resume([TopicPartition(*tp)])
        except Exception as exc:  # revoked meanwhile
            log.info("resume skipped", extra={"error": str(exc)})


def due_ms(msg: Message, note: dict[str, Any], tier: str) -> int:
    """A retry's not_before, but never later than its write time + its tier's delay.

    Every tier topic holds one delay only (policy.next_step), so FIFO is due order; this bound
    keeps that true for records written otherwise (an older version's uncapped Retry-After), so
    one such record cannot hold the partition for longer than the tier's delay.
    """
    not_before = note.get("not_before") or 0
    kind, written_ms = msg.timestamp()
    try:
        delay_ms = int(parse_duration(tier) * 1000)
    except ValueError:
        return not_before
    if kind == TIMESTAMP_NOT_AVAILABLE or written_ms <= 0:
        return not_before
    return min(not_before, written_ms + delay_ms)
