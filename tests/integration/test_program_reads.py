"""Reading the program topics to their end includes every publish that has answered its
caller: the end is the high watermark, not the last stable offset a read_committed lookup
answers, which stops before a transaction committed but not yet marked (or still open)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from ingest.history import KafkaHistory
from plumbing.config_table import (
    ProgramTable,
    VersionConflict,
    _config_value,
    _transactional_producer,
    latest_program,
    publish_program,
)
from processors.runtime.testing import wait_for
from schemas.program import Program
from schemas.topics import PROGRAM_CONFIG, PROGRAM_HISTORY, topic_name

pytestmark = pytest.mark.integration


def open_transaction(settings, topic: str, value: bytes) -> Producer:
    """A publish caught between its records and its commit (what the reader races)."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "transactional.id": f"{settings.topic_prefix}late-publisher"})  # fmt: skip
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic_name(topic, settings), key=b"program", value=value)
    producer.flush(30)  # written, not committed: the stable offset stays before it
    return producer


def read_in_background(read: Callable[[], Any]) -> tuple[threading.Thread, list]:
    got: list = []
    thread = threading.Thread(target=lambda: got.append(read()), daemon=True)
    thread.start()
    return thread, got


def test_the_latest_program_includes_a_transaction_committed_during_the_read(settings):
    base = publish_program(settings, Program(name="before"))
    producer = open_transaction(settings, PROGRAM_CONFIG, _config_value(Program(name="late"), base + 1))
    thread, got = read_in_background(lambda: latest_program(settings))
    thread.join(2.0)
    assert thread.is_alive() and got == []  # not done while that transaction is open
    producer.commit_transaction(30)
    thread.join(30)
    assert [(p.name, p.version) for p in got] == [("late", base + 1)]


def test_a_starting_program_table_waits_for_the_open_publish(settings):
    base = publish_program(settings, Program(name="before"))
    producer = open_transaction(settings, PROGRAM_CONFIG, _config_value(Program(name="late"), base + 1))
    table = ProgramTable(settings)
    thread, _ = read_in_background(table.start)
    thread.join(2.0)
    assert thread.is_alive()  # a processor would otherwise start on the version before
    producer.commit_transaction(30)
    thread.join(30)
    try:
        assert table.current().name == "late" and table.version == base + 1
    finally:
        table.stop()


def test_the_history_includes_a_transaction_committed_during_the_read(settings):
    entry = {"version": 99, "at": 0, "actor": "ops", "action": "create", "summary": "late"}
    producer = open_transaction(settings, PROGRAM_HISTORY, orjson.dumps(entry))
    thread, got = read_in_background(KafkaHistory(settings).versions)
    thread.join(2.0)
    assert thread.is_alive()
    producer.commit_transaction(30)
    wait_for(lambda: bool(got), timeout=30, what="the history read")
    assert [v["version"] for v in got[0]] == [99]


def test_an_aborted_publish_ends_the_wait_and_is_not_read(settings):
    base = publish_program(settings, Program(name="kept"))
    producer = open_transaction(settings, PROGRAM_CONFIG, _config_value(Program(name="lost"), base + 1))
    thread, got = read_in_background(lambda: latest_program(settings))
    producer.abort_transaction(30)
    thread.join(30)
    assert [(p.name, p.version) for p in got] == [("kept", base)]


def test_a_kept_publisher_fenced_by_another_process_publishes_after_it(settings):
    """This process keeps its publisher between publishes; another one's publish (its own
    init_transactions) fences it, and the next publish here still lands on top of that one,
    from a new publisher, with compare-and-set against what the other wrote."""
    base = publish_program(settings, Program(name="here"))  # this process's publisher is kept
    other = _transactional_producer(settings)  # the same transactional id, as another process
    other.init_transactions(30)
    other.begin_transaction()
    other.produce(topic_name(PROGRAM_CONFIG, settings), key=b"program",
                  value=_config_value(Program(name="there"), base + 1))  # fmt: skip
    other.commit_transaction(30)
    with pytest.raises(VersionConflict):
        publish_program(settings, Program(name="stale"), expected=base)
    assert publish_program(settings, Program(name="after"), expected=base + 1) == base + 2
    latest = latest_program(settings)
    assert (latest.name, latest.version) == ("after", base + 2)


def test_a_publish_left_open_is_read_around_not_waited_out(settings):
    """A publisher killed inside its transaction (open until its 60 s timeout here): a read
    waits a few seconds at the last stable offset, then leaves it out, as read_committed would,
    and returns the version before while that transaction is still open."""
    base = publish_program(settings, Program(name="kept"))
    producer = open_transaction(settings, PROGRAM_CONFIG, _config_value(Program(name="lost"), base + 1))
    try:
        thread, got = read_in_background(lambda: latest_program(settings))
        thread.join(30)
        assert [(p.name, p.version) for p in got] == [("kept", base)]
    finally:
        producer.abort_transaction(30)
