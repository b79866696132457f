"""The error policy of the runtime: a record that cannot be decoded, or whose handler raises,
goes to the processor's dead-letter topic and processing goes on with the next record.

Kafka Streams calls these the deserialization and processing exception handlers. Here there is
one policy per processor: `dlq` (the default) or `fail` (stop the processor, for those who
would rather halt than skip). A dead letter is produced inside the processor's transaction, with
the offset commit that moves past its record, so a kill -9 neither loses nor doubles one.

The dead letter keeps the original key and value bytes; its headers say what failed and where
the record came from, so `loyalty dlq replay` can put it back after a fix.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient, NewTopic

from plumbing.topic_admin import create
from schemas.codec import CodecError
from schemas.settings import Settings

log = logging.getLogger(__name__)

POLICIES = ("dlq", "fail")
RETENTION_MS = str(30 * 24 * 3600 * 1000)  # a month to notice, fix and replay
MAX_MESSAGE_CHARS = 1000

# What a broken record raises while it is decoded: the codec's own error, and what the JSON
# path raises on bytes that are not JSON. A None value (a tombstone) is refused before decoding.
DECODE_ERRORS: tuple[type[BaseException], ...] = (CodecError, ValueError, EOFError, TypeError, IndexError,
                                                  KeyError, UnicodeDecodeError)  # fmt: skip


def dlq_topic(processor: str) -> str:
    """The logical dead-letter topic of a processor (TOPIC_PREFIX applies as for every topic)."""
    return f"{processor}.dlq"


def ensure_dlq_topic(settings: Settings, physical: str, partitions: int | None = None) -> None:
    """Create the dead-letter topic unless it exists (`partitions`: default the deployment's
    count; the sink's relay uses one partition, whose tail says where it stopped)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    if physical in admin.list_topics(timeout=30).topics:
        return
    config = {"cleanup.policy": "delete", "retention.ms": RETENTION_MS}
    count = partitions or settings.partitions
    create(admin, [NewTopic(physical, count, settings.replication_factor, config=config)])


def letter_headers(
    *,
    reason: str,
    error_class: str,
    message: str,
    processor: str,
    topic: str,
    partition: int,
    offset: int,
    config_version: int,
    at_ms: int | None = None,
    extra: dict[str, str] | None = None,
) -> list[tuple[str, bytes]]:
    """The `dlq.*` headers of a dead letter, one builder for every writer of `<processor>.dlq`
    (the runtime, delivery, the sink's relay), so `loyalty dlq` reads them all alike."""
    pairs = {
        "dlq.reason": reason,
        "dlq.error.class": error_class,
        "dlq.error.message": message[:MAX_MESSAGE_CHARS],
        "dlq.source.topic": topic,
        "dlq.source.partition": str(partition),
        "dlq.source.offset": str(offset),
        "dlq.processor": processor,
        "dlq.config.version": str(config_version),
        "dlq.at": str(int(time.time() * 1000) if at_ms is None else at_ms),
        **(extra or {}),
    }
    return [(k, v.encode()) for k, v in pairs.items()]


class Tombstone(ValueError):
    """A record with no value: no processor input carries deletes."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why a record was dead-lettered and where it came from."""

    reason: str  # "undecodable" | "processing" | "timer"
    error: BaseException
    processor: str
    topic: str  # physical source topic ("" for a timer)
    partition: int
    offset: int
    config_version: int

    def headers(self) -> list[tuple[str, bytes]]:
        return letter_headers(reason=self.reason, error_class=type(self.error).__name__,
                              message=str(self.error), processor=self.processor, topic=self.topic,
                              partition=self.partition, offset=self.offset,
                              config_version=self.config_version)  # fmt: skip

    def log(self) -> None:
        """One log line; the caller counts it in `stream_dead_letters_total` (the runner when
        its transaction commits, delivery once the letter is acknowledged)."""
        log.error(
            "record dead-lettered",
            extra={"processor": self.processor, "reason": self.reason, "topic": self.topic,
                   "partition": self.partition, "offset": self.offset,
                   "error_class": type(self.error).__name__,
                   "error": str(self.error)[:MAX_MESSAGE_CHARS]},
        )  # fmt: skip


def timer_value(timer: Any) -> bytes:
    """A poisonous timer has no source record: its dead letter carries the timer as JSON."""
    return orjson.dumps({"id": timer.id, "key": timer.key, "at": timer.at, "payload": timer.payload})


def parse_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """A dead letter's headers as a dict (for the CLI and tests)."""
    return {k: (v or b"").decode(errors="replace") for k, v in headers or []}
