"""delivery.input.dlq: records on delivery's inputs it cannot decode or route.

Such a record is written there with its original key and value bytes and the runtime's `dlq.*`
headers, and delivery goes on with the next one. (`delivery.dlq` is another thing: webhooks that
exhausted their retries.) The record's offset commits only once the dead letter is acked, so a
failed write leaves it to be read again after a restart rather than lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import Message

from plumbing.observability import DEAD_LETTERS
from processors.delivery.kafka_io import KafkaOutbox
from processors.runtime.dead_letters import DeadLetter, ensure_dlq_topic
from schemas.settings import Settings
from schemas.topics import topic_name

INPUT_DLQ = "delivery.input.dlq"

log = logging.getLogger(__name__)


class InputDeadLetters:
    """Writes delivery's input dead letters on the outbox's producer."""

    def __init__(self, settings: Settings, outbox: KafkaOutbox) -> None:
        self.settings = settings
        self.topic = topic_name(INPUT_DLQ, settings)
        self._outbox = outbox

    def ensure_topic(self) -> None:
        """Create the topic if missing (blocking), so the first dead letter cannot fail on it."""
        ensure_dlq_topic(self.settings, self.topic)

    async def send(self, msg: Message, letter: DeadLetter, done: Callable[[], None]) -> None:
        """Write `msg` as `letter` and call `done` (its offset may commit) once it is acked."""
        try:
            await self._outbox.send_raw(self.topic, msg.key(), msg.value(), letter.headers())
        except Exception:  # noqa: BLE001 - not acked: the offset stays, redelivered after restart
            log.exception("dead letter not written; the record stays unacknowledged")
            return
        DEAD_LETTERS.labels("delivery", letter.reason).inc()
        letter.log()
        done()
