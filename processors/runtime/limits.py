"""The largest record the broker takes, known before producing, so an oversize record fails
its own event (a dead letter) instead of its transaction.

The broker refuses a record batch above the topic's `max.message.bytes` (MSG_SIZE_TOO_LARGE),
but only at flush, after the transaction holds the records of many events: the commit fails,
the runtime rewinds, meets the same record again, and no partition moves any more. So the
runtime reads `max.message.bytes` of every topic it writes (outputs, changelogs, the DLQ) at
start and sets the producer's `message.max.bytes` to the smallest, less a batch's framing:
librdkafka then refuses an oversize record synchronously in produce(), inside the handler that
emitted it, and stores refuse oversize values in put() (their changelog record would fail at
commit otherwise). Both raise RecordTooLarge: the handler raised, so the record is
dead-lettered (reason `processing`) and processing goes on.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource

from schemas.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 1_000_000  # librdkafka's default message.max.bytes, below the broker's 1048588
FRAMING = 128  # record batch header (61 bytes) + record framing, kept free under the broker limit
MIN_LIMIT = 1000  # librdkafka refuses a smaller message.max.bytes


class RecordTooLarge(ValueError):
    """A record over the broker's size limit: it fails its event, not the transaction."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"MSG_SIZE_TOO_LARGE: {what} is {size} bytes, over the {limit} byte limit")
        self.size = size
        self.limit = limit


def too_large(exc: KafkaException) -> bool:
    return bool(exc.args) and isinstance(exc.args[0], KafkaError) and (
        exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    )


def record_limit(settings: Settings, topics: list[str], configured: int | None = None) -> int:
    """The producer's `message.max.bytes`: the smallest `max.message.bytes` of `topics` less
    FRAMING, capped by `configured` (when given); DEFAULT_LIMIT if the broker does not say."""
    limits = [configured] if configured else []
    try:
        limits += [n - FRAMING for n in _topic_limits(settings, topics).values()]
    except KafkaException as exc:
        log.warning("topic size limits unknown; using the default", extra={"error": str(exc)})
    return max(MIN_LIMIT, min(limits or [DEFAULT_LIMIT]))


def _topic_limits(settings: Settings, topics: list[str]) -> dict[str, int]:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics]
    found = {}
    for resource, future in admin.describe_configs(resources, request_timeout=30).items():
        try:
            entry = future.result(timeout=30).get("max.message.bytes")
        except KafkaException as exc:  # not created yet (auto-created later): the others count
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
            continue
        if entry is not None and entry.value is not None:
            found[resource.name] = int(entry.value)
    return found
