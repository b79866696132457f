"""A producer with another partitioner cannot split a customer's state: the processors own a
customer on the partition murmur2 gives its key (as ingest, the router and every processor's
own commands produce), so a record found elsewhere (librdkafka's default partitioner hashes
with crc32) is forwarded to that partition before it is processed.

One customer's purchases arrive on two partitions: by a crc32 producer and by a murmur2 one.
The wallet holds both, and each event has one result."""

from __future__ import annotations

import time
import uuid
import zlib
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from plumbing import observability as m
from plumbing.config_table import publish_program
from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.partitioner import partition_for
from processors.runtime.runner import Runner, RuntimeOptions
from schemas.codec import encode
from schemas.settings import Settings
from schemas.topics import EVENTS_LOYALTY, topic_name
from tests.integration.test_loyalty_kafka import PROGRAM, Results

pytestmark = pytest.mark.integration


def split_customer(partitions: int) -> str:
    """A customer id whose crc32 partition (librdkafka's default) is not its murmur2 one."""
    for i in range(1000):
        cid = f"split-{i}"
        if zlib.crc32(cid.encode()) % partitions != partition_for(cid.encode(), partitions):
            return cid
    raise AssertionError("no such id")


def purchase(settings: Settings, customer: str, amount: int, partitioner: str) -> str:
    now = int(time.time() * 1000)
    event = {"id": str(uuid.uuid4()), "customer_id": customer, "type": "PURCHASE", "issued_at": now,
             "received_at": now, "properties": orjson.dumps({"amount": amount}).decode()}  # fmt: skip
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "partitioner": partitioner})
    producer.produce(topic_name(EVENTS_LOYALTY, settings), encode("Event", event), customer.encode())
    assert producer.flush(30) == 0
    return event["id"]


def test_a_customer_on_two_partitions_has_one_wallet(settings: Settings, tmp_path: Path) -> None:
    version = publish_program(settings, PROGRAM)
    runner = Runner(LoyaltyProcessor(settings.partitions), settings,
                    RuntimeOptions(state_dir=tmp_path, instance_id="reroute")).start()  # fmt: skip
    results = Results(settings)
    results.runner = runner
    rerouted = m.REROUTED.labels("loyalty", EVENTS_LOYALTY)
    before = rerouted._value.get()
    try:
        runner.program_table.wait_for_version(version, timeout=60)
        cid = split_customer(settings.partitions)
        ids = [purchase(settings, cid, 10, "consistent"), purchase(settings, cid, 5, "murmur2_random"),
               purchase(settings, cid, 1, "consistent")]  # fmt: skip
        done = results.wait_for(lambda rs: [r for r in rs if r["event_id"] in ids] if
                                {r["event_id"] for r in rs} >= set(ids) else None)  # fmt: skip
        assert sorted(r["event_id"] for r in done) == sorted(ids), "one result per event"
        assert max(r["wallet"]["lifetime"] for r in done) == 16
        assert rerouted._value.get() - before == 2
    finally:
        runner.stop()
        results.consumer.close()
