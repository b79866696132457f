"""For producers that write straight to Kafka: build, validate and encode an event exactly as
ingest does (schemas/intake.build_event, the same function), then produce it yourself.

    from confluent_kafka import Producer
    from schemas.producer import EventEncoder
    from schemas.program import load_program

    encoder = EventEncoder(load_program("examples/program.yaml"))
    message = encoder.message({"customer_id": "c-42", "type": "PURCHASE",
                               "reference": "order-1001", "properties": {"amount": 120}})
    producer = Producer({"bootstrap.servers": "localhost:19092", "enable.idempotence": True,
                         "acks": "all", "partitioner": "murmur2_random"})
    producer.produce(message.topic, value=message.value, key=message.key)
    producer.flush()

See docs/producing.md for the contract (topics, key, encoding, ids, results).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from schemas.event_types import ProgramSource, TypeRegistry
from schemas.intake import LIMITS, EventLimits, build_event, encode_event, topic_for
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import topic_name


@dataclass(frozen=True)
class Message:
    """What to produce: the physical topic (TOPIC_PREFIX applied), key and value bytes."""

    topic: str
    key: bytes
    value: bytes
    event: dict[str, Any]  # the Event record, with its `id`

    @property
    def id(self) -> str:
        return self.event["id"]


class _Fixed:
    def __init__(self, program: Program) -> None:
        self.program = program

    def current(self) -> Program:
        return self.program


class EventEncoder:
    """Events checked against a program: a fixed `Program` (e.g. load_program(path)) or a live
    source such as plumbing.config_table.ProgramTable (its `current()`)."""

    def __init__(
        self,
        program: Program | ProgramSource,
        settings: Settings | None = None,
        limits: EventLimits = LIMITS,
    ) -> None:
        source = _Fixed(program) if isinstance(program, Program) else program
        self.types = TypeRegistry(source)
        self.settings = settings or Settings.from_env()
        self.limits = limits

    def event(self, body: dict[str, Any], now_ms: int | None = None) -> dict[str, Any]:
        """The Event record for a POST /behavior/events body; raises schemas.intake.Invalid
        with the fields a 422 would name."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return build_event(body, self.types.current(), now, self.limits)

    def message(self, body: dict[str, Any], now_ms: int | None = None) -> Message:
        """The record to produce for `body`: routed, keyed by customer_id, Avro-encoded."""
        record = self.event(body, now_ms)
        topic = topic_name(topic_for(record), self.settings)
        return Message(topic, record["customer_id"].encode(), encode_event(record), record)
