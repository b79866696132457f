"""The sink's dead letters reach `sink.dlq`: every poison kind once, with the original bytes and
the dlq.* headers, while good records keep flowing; a relay that dies between produce and commit
is fenced and its successor publishes each letter exactly once; `loyalty dlq list|replay sink`."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import KafkaException, Producer
from prometheus_client import REGISTRY

from deploy import dlq
from deploy.cli import main
from plumbing.config_table import publish_program
from processors.runtime.testing import wait_for
from schemas import topics as t
from schemas.codec import encode
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import schema_for, topic_name
from sinks import samples
from sinks.batch import Batch
from sinks.dlq_relay import DlqRelay, last_published
from sinks.mapping import Source
from sinks.sink import Sink, SinkOptions
from sinks.writer import write_batch
from tests.support.pg import committed, query, scalar

pytestmark = pytest.mark.integration

PROGRAM = Program.model_validate(
    {"campaigns": [{"id": "base", "condition": "properties.amount > 0", "formula": "properties.amount"}]}
)


def letters(cfg: Settings) -> list[dlq.DeadLetter]:
    try:
        return list(dlq.read_dead_letters(cfg, "sink"))
    except dlq.DlqError:  # the relay has not created the topic yet
        return []


def dead_lettered(reason: str) -> float:
    labels = {"processor": "sink", "reason": reason}
    return REGISTRY.get_sample_value("stream_dead_letters_total", labels) or 0.0


def produce_raw(cfg: Settings, records: list[tuple[bytes, bytes | None]]) -> list[tuple[int, int]]:
    """Produce raw (key, value) bytes to events.loyalty; their (partition, offset)."""
    producer = Producer({"bootstrap.servers": cfg.kafka_bootstrap_servers, "partitioner": "murmur2_random"})
    where: dict[int, tuple[int, int]] = {}

    def delivered(i: int) -> Any:
        def callback(err: Any, msg: Any) -> None:
            assert err is None, err
            where[i] = (msg.partition(), msg.offset())

        return callback

    for i, (key, value) in enumerate(records):
        producer.produce(topic_name(t.EVENTS_LOYALTY, cfg), key=key, value=value, on_delivery=delivered(i))
    assert producer.flush(30) == 0
    return [where[i] for i in range(len(records))]


def purchases(cfg: Settings, name: str, n: int) -> list[tuple[str, str, dict]]:
    out = []
    for i in range(n):
        cid = f"{cfg.topic_prefix}{name}{i}"
        ev = samples.event(cid, 1, amount=5.0)
        out += [(t.EVENTS_LOYALTY, cid, ev), (t.LOYALTY_RESULTS, cid, samples.result(ev, 5.0, 5.0))]
    return out


@pytest.fixture
def programmed_sink(cfg: Settings) -> Iterator[tuple[Sink, int]]:
    """A running sink that has read a published program (so rejects carry its version)."""
    version = publish_program(cfg, PROGRAM)
    s = Sink(cfg, SinkOptions(batch_size=500, linger_ms=50)).start()
    yield s, version
    s.stop()


def test_each_poison_kind_reaches_sink_dlq_once_with_its_bytes_and_headers(
    cfg: Settings, programmed_sink: tuple[Sink, int]
) -> None:
    sink, version = programmed_sink
    prefix = cfg.topic_prefix
    valid = encode(schema_for(t.EVENTS_LOYALTY), samples.event(prefix + "trunc", 1))
    nul = samples.event(prefix + "nul", 1, properties='{"amount": 3, "note": "a\\u0000b"}')
    poison: list[tuple[str, bytes | None]] = [
        ("undecodable", b"garbage bytes \xff\x00"),
        ("undecodable", b"\xc3\x01" + struct.pack(">Q", 0x1234_5678_9ABC_DEF0) + b"body"),  # unknown schema
        ("undecodable", orjson.dumps({"customer_id": prefix + "json", "type": "PURCHASE"})),
        ("undecodable", valid[: len(valid) // 2]),  # a known fingerprint, a truncated body
        ("undecodable", None),  # a tombstone
        ("refused", encode(schema_for(t.EVENTS_LOYALTY), nul)),  # NUL in text: PostgreSQL refuses
    ]
    before = {r: dead_lettered(r) for r in ("undecodable", "refused")}
    good = purchases(cfg, "before", 5)
    samples.produce(cfg, good)
    keys = [f"{prefix}poison{i}".encode() for i in range(len(poison))]
    where = produce_raw(cfg, [(k, v) for k, (_, v) in zip(keys, poison, strict=True)])
    after = purchases(cfg, "after", 5)
    samples.produce(cfg, after)

    total = len(good) + len(poison) + len(after)
    wait_for(lambda: committed(cfg) == total, timeout=60, what="every record committed")
    found = wait_for(lambda: (ls := letters(cfg)) and len(ls) >= len(poison) and ls, timeout=60,
                     what="the dead letters in sink.dlq")  # fmt: skip
    url = cfg.database_url
    max_id = scalar(url, "SELECT max(id) FROM sink_rejects WHERE topic LIKE %s", prefix + "%")
    wait_for(lambda: sink.relay.last_id == max_id, what="the relay at the last reject")
    found = letters(cfg)  # read again once everything is published: exactly once
    assert len(found) == len(poison)
    by_key = {letter.key: letter for letter in found}
    source = topic_name(t.EVENTS_LOYALTY, cfg)
    for key, (reason, value), (partition, offset) in zip(keys, poison, where, strict=True):
        letter = by_key[key]
        h = letter.headers
        assert letter.value == value, reason
        assert (h["dlq.reason"], h["dlq.processor"], h["dlq.source.topic"]) == (reason, "sink", source)
        assert (int(h["dlq.source.partition"]), int(h["dlq.source.offset"])) == (partition, offset)
        assert h["dlq.config.version"] == str(version)
        assert h["dlq.error.class"] and h["dlq.error.message"]
        assert h["dlq.table"] == ("events" if reason == "refused" else "")
        assert "dlq.value.dropped" not in h
        error = scalar(url, "SELECT error FROM sink_rejects WHERE id = %s", int(h["dlq.reject_id"]))
        assert h["dlq.error.class"] in error
    assert by_key[keys[-1]].headers["dlq.error.class"] in ("DataError", "UntranslatableCharacter")
    assert sorted(int(d.headers["dlq.reject_id"]) for d in found) == [
        i for (i,) in query(url, "SELECT id FROM sink_rejects WHERE topic LIKE %s ORDER BY id", prefix + "%")
    ]
    assert dead_lettered("undecodable") - before["undecodable"] == 5
    assert dead_lettered("refused") - before["refused"] == 1
    landed = scalar(url, "SELECT count(*) FROM events WHERE customer_id LIKE %s AND status = 'RESOLVED'",
                    prefix + "%")  # fmt: skip
    assert landed == 10  # the good ones before and after the poison
    assert sink.health()["status"] == "ok" and sink.health()["dlq_relay"] == "leader"


class Crash(BaseException):
    """The relay's process dies here: nothing after this line of it runs."""


def stored_rejects(cfg: Settings, n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    """`n` rejects written by the sink's writer (undecodable-like and unmappable records)."""
    physical = topic_name(t.NOTIFICATIONS, cfg)
    batch = Batch()
    originals = []
    for i in range(start, start + n):
        original = (f"k{i}".encode(), f"v{i}\x00\xff".encode("latin-1"))
        originals.append(original)
        unmappable = {"customer_id": "x"}  # a notification with no id
        batch.add(unmappable, Source(t.NOTIFICATIONS, 0, i, 0, original), physical)
    with psycopg.connect(cfg.database_url) as conn:
        assert len(write_batch(conn, batch, {(physical, 0): start} if start else {}).rejects) == n
    return originals


def reject_ids(cfg: Settings) -> list[int]:
    sql = "SELECT id FROM sink_rejects WHERE topic = %s ORDER BY id"
    return [i for (i,) in query(cfg.database_url, sql, topic_name(t.NOTIFICATIONS, cfg))]


def relay(cfg: Settings, **kw: Any) -> DlqRelay:
    def connect() -> psycopg.Connection:
        return psycopg.connect(cfg.database_url, autocommit=True)

    return DlqRelay(cfg, connect, [topic_name(t.NOTIFICATIONS, cfg)], **kw)


def test_a_relay_dying_between_produce_and_commit_is_fenced_and_each_letter_lands_once(
    cfg: Settings,
) -> None:
    originals = stored_rejects(cfg, 7)
    zombie: list[Producer] = []

    def die(producer: Producer, batch: list) -> None:
        assert producer.flush(30) == 0  # the letters are on the broker, uncommitted
        zombie.append(producer)
        raise Crash

    first = relay(cfg, before_commit=die)
    with pytest.raises(Crash):
        first.step()
    first._release()  # its PostgreSQL session ends with the process: the lock is free
    assert letters(cfg) == []  # read_committed: nothing of the open transaction

    second = relay(cfg)
    assert second.step() == 7  # init_transactions fenced the first and aborted its transaction
    with pytest.raises(KafkaException):
        zombie[0].commit_transaction(30)  # the zombie can no longer commit its letters
    assert second.step() == 0

    originals += stored_rejects(cfg, 3, start=7)
    assert second.step() == 3
    second._release()

    ids = reject_ids(cfg)
    third = relay(cfg)  # a restart: learns the position from the topic's tail
    assert third.step() == 0 and third.last_id == ids[-1]
    third._release()
    found = letters(cfg)
    assert [(d.key, d.value) for d in found] == originals
    assert [int(d.headers["dlq.reject_id"]) for d in found] == ids
    assert {d.headers["dlq.reason"] for d in found} == {"unmappable"}
    assert found[0].headers["dlq.error.class"] == "KeyError"
    assert last_published(cfg, second.topic) == ids[-1]


def test_only_one_relay_of_a_deployment_publishes(cfg: Settings) -> None:
    stored_rejects(cfg, 2)
    leader, standby = relay(cfg), relay(cfg)
    try:
        assert leader.step() == 2 and leader.state == "leader"
        assert standby.step() == 0 and standby.state == "standby"
        leader._release()  # the leader goes away: the standby takes over where it stopped
        assert standby.step() == 0 and standby.state == "leader" and standby.last_id == reject_ids(cfg)[-1]
    finally:
        leader._release()
        standby._release()
    assert len(letters(cfg)) == 2


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_dlq_list_and_replay_sink_reinject_the_original_bytes(
    cfg: Settings, sink: Sink, capsys: pytest.CaptureFixture[str]
) -> None:
    key, value = (cfg.topic_prefix + "odd").encode(), b"not avro at all"
    [(partition, offset)] = produce_raw(cfg, [(key, value)])
    [letter] = wait_for(lambda: letters(cfg), timeout=60, what="the dead letter")

    code, out = run_cli(capsys, "dlq", "list", "sink", "--json")
    assert code == 0
    [listed] = [orjson.loads(line) for line in out.splitlines()]
    assert {k: listed[k] for k in ("reason", "processor", "source_topic", "source_partition", "source_offset",
                                   "key", "value_size")} == {  # fmt: skip
        "reason": "undecodable", "processor": "sink", "source_topic": topic_name(t.EVENTS_LOYALTY, cfg),
        "source_partition": partition, "source_offset": offset, "key": key.decode(), "value_size": len(value),
    }  # fmt: skip

    code, out = run_cli(capsys, "dlq", "replay", "sink", "--offset", letter.position)
    assert code == 0 and "replayed" in out
    # the sink reads the same bytes again, rejects them again: a second letter with them
    again = wait_for(lambda: (ls := letters(cfg)) and len(ls) == 2 and ls, timeout=60, what="the replay")
    replayed = again[1].as_json()
    assert (again[1].key, again[1].value) == (key, value)
    assert (replayed["source_partition"], replayed["source_offset"]) != (partition, offset)
