"""One bad record never stops a processor: every poison kind on every input topic of the loyalty,
audiences and journeys processors lands once in `<processor>.dlq` with its original bytes and
headers saying why and from where, and good records in every partition keep flowing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from plumbing.config_table import publish_program
from plumbing.kafka_util import committed_reader
from processors.audiences.processor import build as build_audiences
from processors.journeys.processor import build as build_journeys
from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.api import Processor
from processors.runtime.dead_letters import dlq_topic, parse_headers
from processors.runtime.runner import Runner, RuntimeOptions
from processors.runtime.testing import wait_for
from schemas import topics as t
from schemas.codec import decode, encode
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import topic_name

pytestmark = pytest.mark.integration

PROGRAM = Program.model_validate(
    {
        "event_types": [{"name": "PURCHASE"}, {"name": "ADD_TO_CART", "path": "tracking"}],
        "campaigns": [{"id": "base", "condition": "properties.amount > 0", "formula": "properties.amount"}],
        "audiences": [{"id": "purchasers", "condition": "profile.purchase_count > 0"}],
        "journeys": [
            {
                "id": "cart",
                "entry_event": "ADD_TO_CART",
                "nodes": [{"id": "start", "kind": "start"}, {"id": "wait", "kind": "wait"},
                          {"id": "end", "kind": "end"}],  # fmt: skip
                "edges": [{"from": "start", "to": "wait"},
                          {"from": "wait", "to": "end", "wait_minutes": 30}],  # fmt: skip
            }
        ],
    }
)


def event(customer: str, type_: str = "PURCHASE", path: str = "loyalty", **fields: Any) -> dict:
    now = int(time.time() * 1000)
    return {"id": str(uuid.uuid4()), "customer_id": customer, "type": type_, "path": path,
            "issued_at": now, "received_at": now, "properties": '{"amount": 10}', **fields}  # fmt: skip


def profile(customer: str, body: str | None = None) -> dict:
    flat = {"customer_id": customer, "purchase_count": 1, "anonymous": False}
    return {"customer_id": customer, "anonymous": False, "updated_at": int(time.time() * 1000),
            "profile": body if body is not None else orjson.dumps(flat).decode()}  # fmt: skip


def poisons(schema: str, handler_breaker: dict | None) -> dict[str, bytes | None]:
    """The poison kinds found from outside, as raw values for a topic of `schema`."""
    valid = encode(schema, handler_breaker or _minimal(schema))
    kinds: dict[str, bytes | None] = {
        "garbage": b"\x00\xffgarbage",
        "unknown-fingerprint": b"\xc3\x01" + b"\x01" * 8 + valid[10:],
        "json-object": b'{"customer_id": "x", "type": "PURCHASE"}',
        "truncated": valid[: len(valid) - 3],
        "tombstone": None,
    }
    if handler_breaker is not None:
        kinds["handler-raises"] = valid
    return kinds


def _minimal(schema: str) -> dict:
    if schema == "Event":
        return event("poison")
    if schema == "Profile":
        return profile("poison")
    return {"audience_id": "purchasers", "customer_id": "poison", "action": "ENTER", "at": 1}


@dataclass
class Case:
    build: Callable[[int], Processor]
    good_topic: str
    good: Callable[[str], dict]
    output: str
    breakers: dict[str, dict]  # input topic -> a valid record whose handling raises


CASES = {
    "loyalty": Case(
        LoyaltyProcessor, t.EVENTS_LOYALTY, lambda c: event(c), t.LOYALTY_RESULTS,
        {t.EVENTS_LOYALTY: event("poison", kind="NOPE", properties="not json")},
    ),
    "audiences": Case(
        lambda n: build_audiences(), t.PROFILES_CHANGES, profile, t.AUDIENCES_MEMBERSHIP,
        {t.PROFILES_CHANGES: profile("poison", body="not json")},
    ),
    "journeys": Case(
        lambda n: build_journeys(), t.EVENTS_TRACKING,
        lambda c: event(c, "ADD_TO_CART", "tracking"), t.JOURNEYS_ACTIVITY,
        {t.PROFILES_CHANGES: profile("poison", body="not json")},
    ),
}  # fmt: skip


def read_all(settings: Settings, base: str, until: Callable[[list], bool], timeout: float = 60) -> list:
    consumer = committed_reader(settings, base)
    seen: list = []
    try:
        deadline = time.monotonic() + timeout
        while not until(seen):
            assert time.monotonic() < deadline, f"{base}: timed out with {len(seen)} records"
            seen += [m for m in consumer.consume(500, 0.2) if not m.error()]
    finally:
        consumer.close()
    return seen


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_poison_kind_on_every_input_is_dead_lettered_once(
    name: str, settings: Settings, tmp_path: Path
) -> None:
    case = CASES[name]
    processor = case.build(settings.partitions)
    publish_program(settings, PROGRAM)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    sent: list[tuple[str, int, bytes | None, str]] = []
    for topic in processor.inputs:
        schema = t.schema_for(topic)
        for i, (kind, raw) in enumerate(poisons(schema, case.breakers.get(topic)).items()):
            partition = i % settings.partitions
            producer.produce(topic_name(topic, settings), raw, f"{kind}-key".encode(), partition=partition)
            sent.append((topic, partition, raw, kind))
    customers = [f"good-{n}" for n in range(4 * settings.partitions)]
    for customer in customers:
        value = encode(t.schema_for(case.good_topic), case.good(customer))
        producer.produce(topic_name(case.good_topic, settings), value, customer.encode())
    assert producer.flush(30) == 0

    options = RuntimeOptions(state_dir=tmp_path, instance_id="it", metrics_port=None)
    run = Runner(processor, settings, options).start()
    try:
        outputs = read_all(settings, case.output, lambda got: _customers(got, case.output) >= set(customers))
        letters = read_all(settings, dlq_topic(processor.name), lambda seen: len(seen) >= len(sent))
        assert run.error is None and run.healthy()
    finally:
        run.stop()
    assert outputs
    got = sorted(((parse_headers(m.headers())["dlq.source.topic"], m.value(), m.key()) for m in letters),
                 key=repr)  # fmt: skip
    want = sorted(((topic_name(topic, settings), raw, f"{kind}-key".encode())
                   for topic, _, raw, kind in sent), key=repr)  # fmt: skip
    assert got == want  # each poison once, its original key and value bytes
    for m in letters:
        headers = parse_headers(m.headers())
        assert headers["dlq.processor"] == processor.name
        assert headers["dlq.reason"] in ("undecodable", "processing")
        assert headers["dlq.error.class"] and headers["dlq.source.offset"].isdigit()
        assert int(headers["dlq.config.version"]) >= 0
    kinds = {parse_headers(m.headers())["dlq.reason"] for m in letters}
    assert kinds == ({"undecodable", "processing"} if case.breakers else {"undecodable"})


def _customers(messages: list, topic: str) -> set[str]:
    schema = t.schema_for(topic)
    return {decode(m.value(), schema)["customer_id"] for m in messages}


def test_the_fail_policy_stops_the_processor(settings: Settings, tmp_path: Path) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    producer.produce(topic_name(t.PROFILES_CHANGES, settings), b"garbage", b"k")
    assert producer.flush(30) == 0
    options = RuntimeOptions(state_dir=tmp_path, instance_id="it", error_policy="fail")
    run = Runner(build_audiences(), settings, options).start()
    try:
        wait_for(lambda: run.error is not None, what="the processor to stop on the bad record")
    finally:
        run.stop()
    assert "CodecError" in type(run.error).__name__ or "codec" in repr(run.error).lower()
