"""`loyalty dlq list|replay`: look at a stream processor's dead letters and put them back.

The runtime (processors/runtime/dead_letters.py) writes a record it cannot decode, or whose
handler raised, to `<processor>.dlq` with its original key and value bytes and `dlq.*` headers
saying why and where from. `list` reads that topic (committed records only) from its beginning
up to the end offsets read at the start; `replay` produces the chosen dead letters' original
key and value again to their source topic, after a fix, so the processor handles them anew.

The sink's dead letters are in `sink.dlq` too (published from its `sink_rejects` table by
sinks/dlq_relay.py, with the same headers), so `list sink` and `replay sink` work alike.

Replaying never removes anything from the dead-letter topic (Kafka topics are append-only): a
dead letter replayed twice is re-injected twice. A timer's dead letter has no source record
(its value is the timer as JSON) and cannot be replayed, nor can one whose original value was
not kept (header `dlq.value.dropped`): replaying it would produce a tombstone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from plumbing.kafka_util import watermarks
from processors.runtime.dead_letters import dlq_topic, parse_headers
from schemas.settings import Settings
from schemas.topics import topic_name

REPLAYED_FROM = "dlq.replayed-from"
PREVIEW_CHARS = 80

Position = tuple[int, int]  # (partition, offset) in the dead-letter topic


class DlqError(Exception):
    """A dead-letter command that cannot be carried out; the message says why."""


def physical_topic(settings: Settings, processor: str) -> str:
    """The Kafka topic holding `processor`'s dead letters (TOPIC_PREFIX applied)."""
    return topic_name(dlq_topic(processor), settings)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of a dead-letter topic: where it sits, its original bytes, its headers."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def reason(self) -> str:
        return self.headers.get("dlq.reason", "")

    @property
    def source_topic(self) -> str:
        return self.headers.get("dlq.source.topic", "")

    @property
    def at(self) -> int | None:
        return _int(self.headers.get("dlq.at"))

    def as_json(self) -> dict[str, Any]:
        """Every field of the dead letter, JSON-ready (`--json`)."""
        h = self.headers
        key_text = _text(self.key)
        return {
            "dlq_topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "at": self.at,
            "at_iso": _iso(self.at),
            "reason": self.reason,
            "error_class": h.get("dlq.error.class", ""),
            "error_message": h.get("dlq.error.message", ""),
            "processor": h.get("dlq.processor", ""),
            "source_topic": self.source_topic,
            "source_partition": _int(h.get("dlq.source.partition")),
            "source_offset": _int(h.get("dlq.source.offset")),
            "config_version": _int(h.get("dlq.config.version")),
            "key": key_text,
            "key_hex": self.key.hex() if self.key is not None and key_text is None else None,
            "value_size": None if self.value is None else len(self.value),
            "value_preview": _preview(self.value),
        }

    def describe(self) -> str:
        """A few human-readable lines (`list` without `--json`)."""
        j = self.as_json()
        source = f"{j['source_topic']}[{j['source_partition']}]@{j['source_offset']}"
        if self.reason == "timer":
            source = "(a timer: no source record)"
        if j["value_size"] is None:
            value = "none (tombstone)"
        else:
            value = f"{j['value_size']} bytes"
            value += f" {j['value_preview']!r}" if j["value_preview"] is not None else " (binary)"
        return (
            f"{self.position}  {j['at_iso'] or '?'}  {j['reason'] or '?'}  "
            f"{j['error_class']}: {j['error_message']}\n"
            f"    source {source}  config version {j['config_version']}\n"
            f"    key {show_key(self.key)}  value {value}"
        )


def read_dead_letters(
    settings: Settings,
    processor: str,
    partitions: Iterable[int] | None = None,
    limit: int | None = None,
    timeout: float = 30.0,
) -> Iterator[DeadLetter]:
    """The committed dead letters of `processor`, partition by partition in offset order, up
    to the end offsets read when each partition is started (nothing produced later is waited
    for). `timeout`: seconds without progress before giving up on a partition."""
    topic = physical_topic(settings, processor)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"dlq-reader-{uuid.uuid4().hex}",  # never committed: reads leave no trace
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        wanted = _partitions(consumer, topic)
        if partitions is not None:
            only = set(partitions)
            wanted = [p for p in wanted if p in only]
        count = 0
        for partition in wanted:
            if limit is not None and count >= limit:
                return
            for letter in _read_partition(consumer, topic, partition, timeout):
                yield letter
                count += 1
                if limit is not None and count >= limit:
                    return
    finally:
        consumer.close()


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise DlqError(
            f"no dead-letter topic {topic}: the processor has not run with the dlq error policy "
            "under this TOPIC_PREFIX, or the name is wrong"
        )
    return sorted(meta.partitions)


def _read_partition(consumer: Consumer, topic: str, partition: int, timeout: float) -> Iterator[DeadLetter]:
    # with read_committed the high watermark is the last stable offset: transaction markers
    # and aborted records below it are never delivered, so the end is found by offset or EOF
    low, end = watermarks(consumer, TopicPartition(topic, partition))
    if end <= low:
        return
    consumer.assign([TopicPartition(topic, partition, low)])
    deadline = time.monotonic() + timeout
    last_error: KafkaError | None = None
    while True:
        msg = consumer.poll(0.5)
        if time.monotonic() > deadline:
            raise DlqError(f"{topic}[{partition}]: no progress towards offset {end} in {timeout:.0f}s"
                           + (f" (last error: {last_error.str()})" if last_error else ""))  # fmt: skip
        if msg is None or msg.partition() != partition:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF and msg.offset() >= end:
                return
            last_error = msg.error()
            continue
        deadline = time.monotonic() + timeout
        if msg.offset() >= end:
            return
        yield DeadLetter(topic, partition, msg.offset(), msg.key(), msg.value(), parse_headers(msg.headers()))
        if msg.offset() + 1 >= end:
            return


def parse_position(text: str) -> Position:
    """`"0:5"` -> (0, 5): partition and offset of a dead letter in the dead-letter topic."""
    partition, sep, offset = text.strip().partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"{text!r} is not PARTITION:OFFSET (e.g. 0:5)")
    return int(partition), int(offset)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a replay would produce, and the dead letters it leaves out (with why)."""

    letters: list[DeadLetter]
    skipped: list[tuple[DeadLetter, str]]


def plan_replay(letters: Iterable[DeadLetter], selection: list[Position] | None) -> Plan:
    """Choose the dead letters to replay: those at `selection`, or all of them (None).

    A chosen dead letter that cannot be replayed (a timer, or no source topic) is refused when
    selected by position (nothing is replayed then) and skipped, with the reason, by `--all`.
    A selected position with no dead letter is refused."""
    by_position = {(d.partition, d.offset): d for d in letters}
    if selection is None:
        chosen = [by_position[p] for p in sorted(by_position)]
    else:
        missing = [f"{p}:{o}" for p, o in selection if (p, o) not in by_position]
        if missing:
            raise DlqError(f"no dead letter at {', '.join(missing)}")
        chosen = [by_position[p] for p in dict.fromkeys(selection)]
    ok: list[DeadLetter] = []
    skipped: list[tuple[DeadLetter, str]] = []
    for letter in chosen:
        why = unreplayable(letter)
        if why is None:
            ok.append(letter)
        elif selection is not None:
            raise DlqError(f"cannot replay {letter.position}: {why}")
        else:
            skipped.append((letter, why))
    return Plan(ok, skipped)


def unreplayable(letter: DeadLetter) -> str | None:
    """Why `letter` cannot be put back on its source topic, or None when it can."""
    if letter.reason == "timer":
        return ("a timer's dead letter has no source record to re-inject (its value is the timer "
                "as JSON); fix the handler and schedule it again")  # fmt: skip
    if not letter.source_topic:
        return "it has no dlq.source.topic header"
    dropped = letter.headers.get("dlq.value.dropped")
    if dropped is not None:
        return f"its original value was not kept ({dropped}); replaying it would produce a tombstone"
    return None


@dataclass(frozen=True, slots=True)
class Replayed:
    """A dead letter re-produced to its source topic, and where it landed."""

    letter: DeadLetter
    topic: str
    partition: int
    offset: int


def replay(settings: Settings, plan: Plan, timeout: float = 30.0) -> list[Replayed]:
    """Produce each planned dead letter's original key and value bytes to its source topic
    (partitioned by key with murmur2_random, as every producer of the system does), with a
    `dlq.replayed-from` header; idempotent producer, flushed before returning."""
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
        }
    )
    done: list[Replayed] = []
    failed: list[str] = []

    def delivered(letter: DeadLetter) -> Any:
        def callback(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                failed.append(f"{letter.position}: {err.str()}")
            else:
                done.append(Replayed(letter, msg.topic(), msg.partition(), msg.offset()))

        return callback

    for letter in plan.letters:
        origin = f"{letter.topic}:{letter.partition}:{letter.offset}"
        headers = [(REPLAYED_FROM, origin.encode())]
        producer.produce(letter.source_topic, value=letter.value, key=letter.key, headers=headers,
                         on_delivery=delivered(letter))  # fmt: skip
        producer.poll(0)
    left = producer.flush(timeout)
    if left or failed:
        written = ", ".join(r.letter.position for r in done) or "none"
        problems = failed + ([f"{left} not acknowledged within {timeout:.0f}s"] if left else [])
        raise DlqError(f"replay incomplete ({'; '.join(problems)}); written: {written}")
    return sorted(done, key=lambda r: (r.letter.partition, r.letter.offset))


def describe_replayed(r: Replayed) -> str:
    """One line per replayed dead letter."""
    moved = ""
    source = r.letter.headers.get("dlq.source.partition")
    if source is not None and source != str(r.partition):
        moved = f" (was partition {source}: the key's partition differs)"
    return (f"{r.letter.position} -> {r.topic}[{r.partition}]@{r.offset}  key {show_key(r.letter.key)}"
            f"{moved}")  # fmt: skip


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(raw: bytes | None) -> str | None:
    """`raw` as text when it is printable UTF-8, else None."""
    if raw is None:
        return None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None
    return text if all(c.isprintable() or c in "\t\n\r" for c in text) else None


def _preview(raw: bytes | None) -> str | None:
    text = _text(raw)
    if text is None:
        return None
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."


def show_key(key: bytes | None) -> str:
    """A key for people: quoted text, hex when not printable, (none) when absent."""
    if key is None:
        return "(none)"
    text = _text(key)
    return repr(text) if text is not None else f"0x{key.hex()}"
