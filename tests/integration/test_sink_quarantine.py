"""The sink cannot be wedged by one record: a refused row, an undecodable or unmappable record
goes to sink_rejects and every other row of its batch lands; repeats and clock skew do not
overwrite what was applied."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from processors.runtime.testing import wait_for
from schemas import topics as t
from schemas.settings import Settings
from schemas.topics import topic_name
from sinks import samples
from sinks.batch import Batch
from sinks.mapping import Source
from sinks.sink import Sink
from sinks.writer import write_batch
from tests.support.pg import committed, query, scalar

pytestmark = pytest.mark.integration


def rejects(url: str, prefix: str) -> list[tuple]:
    return query(
        url,
        'SELECT "table", error, record::text FROM sink_rejects WHERE topic LIKE %s ORDER BY "offset"',
        prefix + "%",
    )


def rejected_total(table: str) -> float:
    return REGISTRY.get_sample_value("sink_rejects_total", {"table": table}) or 0.0


def activity(cid: str, n: int, kind: str, **kw: Any) -> dict:
    return {"id": f"{cid}-a{n}", "journey_id": "cart_abandonment", "instance_id": cid + "-i1",
            "customer_id": cid, "kind": kind, "at": samples.NOW + n, **kw}  # fmt: skip


def purchase(cid: str, n: int = 1, **kw: Any) -> list[tuple[str, str, dict]]:
    ev = samples.event(cid, n, amount=25.0, **kw)
    return [(t.EVENTS_LOYALTY, cid, ev), (t.LOYALTY_RESULTS, cid, samples.result(ev, 25.0, 25.0))]


def test_a_customer_waiting_in_a_journey_stops_no_table(cfg: Settings, sink: Sink) -> None:
    """The journey waits after ENTER + TRANSITION (no status); before the fix the NOT NULL
    status of journey_instances refused that batch forever and no table moved."""
    waiting, buyer = cfg.topic_prefix + "waiting", cfg.topic_prefix + "buyer"
    records = [
        (t.JOURNEYS_ACTIVITY, waiting, activity(waiting, 1, "ENTER", to_node="start")),
        (t.JOURNEYS_ACTIVITY, waiting, activity(waiting, 2, "TRANSITION", from_node="start",
                                                to_node="wait_30m")),  # fmt: skip
        *purchase(buyer),
    ]
    samples.produce(cfg, records)
    wait_for(lambda: committed(cfg) == len(records), what="every record committed")
    url = cfg.database_url
    assert query(url, "SELECT status, current_node FROM journey_instances WHERE customer_id = %s",
                 waiting) == [("ACTIVE", "wait_30m")]  # fmt: skip
    assert scalar(url, "SELECT status FROM events WHERE customer_id = %s", buyer) == "RESOLVED"
    assert scalar(url, "SELECT points FROM wallets WHERE customer_id = %s", buyer) == 25.0
    assert rejects(url, cfg.topic_prefix) == []


def test_an_instance_first_seen_by_a_transition_is_active(sink_db: str) -> None:
    """ENTER in one batch, TRANSITION alone in the next: the stored status is kept."""
    cid = "tr-alone"
    for n, kind in ((1, "ENTER"), (2, "TRANSITION"), (3, "ACTION")):
        batch = Batch()
        batch.add(activity(cid, n, kind, to_node=f"n{n}"), Source(t.JOURNEYS_ACTIVITY, 0, n), "q.ja")
        with psycopg.connect(sink_db) as conn:
            assert write_batch(conn, batch, {("q.ja", 0): n} if n > 1 else {}).rejects == []
    assert query(sink_db, "SELECT status, current_node FROM journey_instances WHERE customer_id = %s",
                 cid) == [("ACTIVE", "n2")]  # fmt: skip


def test_a_nul_in_text_is_quarantined_and_the_rest_of_the_batch_lands(cfg: Settings, sink: Sink) -> None:
    prefix = cfg.topic_prefix
    before = rejected_total("events")
    bad_props = samples.event(prefix + "nul", 1, properties='{"amount": 3, "note": "a\\u0000b"}')
    bad_id = samples.event(prefix + "a\x00b", 2)
    records = [
        *purchase(prefix + "before"),
        (t.EVENTS_LOYALTY, prefix + "nul", bad_props),
        (t.EVENTS_LOYALTY, prefix + "nulid", bad_id),
        *purchase(prefix + "after"),
    ]
    samples.produce(cfg, records)
    wait_for(lambda: committed(cfg) == len(records), what="every record committed")
    url = cfg.database_url
    landed = query(url, "SELECT customer_id, status FROM events WHERE customer_id LIKE %s "
                   "ORDER BY customer_id", prefix + "%")  # fmt: skip
    assert landed == [(prefix + "after", "RESOLVED"), (prefix + "before", "RESOLVED")]
    found = rejects(url, prefix)
    assert [table for table, _, _ in found] == ["events", "events"]
    # psycopg refuses a NUL in text (text COPY), PostgreSQL does (binary COPY: 22021)
    refusals = ("DataError", "UntranslatableCharacter", "CharacterNotInRepertoire")
    assert all(any(name in error for name in refusals) for _, error, _ in found)
    stored = sorted((orjson.loads(record) for _, _, record in found), key=lambda r: r["reference"])
    assert stored[0]["properties"] == bad_props["properties"]  # ref-1
    assert stored[1]["customer_id"] == prefix + "a\x00b"  # ref-2
    assert rejected_total("events") - before == 2
    assert sink.health()["status"] == "ok"


def test_undecodable_and_unmappable_records_are_quarantined_not_skipped(cfg: Settings, sink: Sink) -> None:
    prefix = cfg.topic_prefix
    before = rejected_total("none")
    raw = Producer({"bootstrap.servers": cfg.kafka_bootstrap_servers})
    physical = topic_name(t.EVENTS_LOYALTY, cfg)
    key = (prefix + "c").encode()
    for value in (b"garbage", b"\xc3\x01" + b"\x00" * 8 + b"body", None):
        raw.produce(physical, key=key, value=value)
    assert raw.flush(10) == 0
    samples.produce(cfg, purchase(prefix + "c"))
    wait_for(lambda: committed(cfg) == 5, what="every record committed")
    url = cfg.database_url
    assert scalar(url, "SELECT status FROM events WHERE customer_id = %s", prefix + "c") == "RESOLVED"
    found = rejects(url, prefix)
    assert len(found) == 3
    assert all(table == "" and error.startswith("undecodable") for table, error, _ in found)
    assert orjson.loads(found[0][2]) == {"key_base64": _b64(key), "value_base64": _b64(b"garbage")}
    assert orjson.loads(found[2][2])["value_base64"] is None
    assert rejected_total("none") - before == 3


def test_an_unmappable_record_is_quarantined(sink_db: str) -> None:
    batch = Batch()
    batch.add({"customer_id": "x"}, Source(t.NOTIFICATIONS, 0, 0), "q.n")  # no id, no event
    with psycopg.connect(sink_db) as conn:
        written = write_batch(conn, batch, {})
    assert [(r.table, r.error.split(":")[0]) for r in written.rejects] == [("", "unmappable")]
    assert query(sink_db, "SELECT record::text FROM sink_rejects WHERE topic = 'q.n'") == [
        ('{"customer_id":"x"}',)
    ]


def test_a_repeated_event_keeps_what_was_applied_and_counts_the_repeat(sink_db: str) -> None:
    cid = "repeat"
    first = samples.event(cid, 1, amount=10.0)
    again = dict(first, properties='{"amount": 999}', received_at=first["received_at"] + 50)
    applied = samples.result(first, 10.0, 10.0)
    duplicate = samples.result(first, 10.0, 10.0, duplicate=True)
    records = [(t.EVENTS_LOYALTY, first), (t.LOYALTY_RESULTS, applied),
               (t.EVENTS_LOYALTY, again), (t.LOYALTY_RESULTS, duplicate)]  # fmt: skip
    for split in (False, True):  # the repeat in the same batch as the first send, or later
        url = sink_db
        cid_n = f"{cid}-{split}"
        batches = [records[:2], records[2:]] if split else [records]
        offsets: dict = {}
        for part in batches:
            batch = Batch()
            for topic, value in part:
                value = _with_customer(value, cid_n)
                off = offsets.get(topic, 0)
                batch.add(value, Source(topic, 0, off), f"{cid_n}.{topic}")
                offsets[topic] = off + 1
            with psycopg.connect(url) as conn:
                start = {k: v for k, v in _stored(conn, cid_n).items() if k in batch.offsets}
                assert write_batch(conn, batch, start).rejects == []
        row = query(url, "SELECT properties->>'amount', sends, points FROM events WHERE customer_id = %s",
                    cid_n)  # fmt: skip
        assert row == [("10.0", 2, 10.0)], f"split={split}"


def test_the_wallet_with_the_greater_sequence_wins_whatever_the_clocks(sink_db: str) -> None:
    """A failover to a host whose clock is behind: the later wallet has an older processed_at."""
    for same_batch in (True, False):
        cid = f"seq-{same_batch}"
        ev1, ev2 = samples.event(cid, 1), samples.event(cid, 2)
        r1 = _sequenced(samples.result(ev1, 10.0, 10.0, processed_at=samples.NOW + 9000), 5)
        r2 = _sequenced(samples.result(ev2, 10.0, 20.0, processed_at=samples.NOW + 1000), 6)
        parts = [[r1, r2]] if same_batch else [[r1], [r2]]
        physical = f"{cid}.results"
        for i, part in enumerate(parts):
            batch = Batch()
            for n, value in enumerate(part):
                batch.add(value, Source(t.LOYALTY_RESULTS, 0, i + n), physical)
            with psycopg.connect(sink_db) as conn:
                assert write_batch(conn, batch, {(physical, 0): 1} if i else {}).rejects == []
        assert query(sink_db, "SELECT points, sequence FROM wallets WHERE customer_id = %s", cid) == [
            (20.0, 6)
        ], f"same_batch={same_batch}"


def _sequenced(result: dict, sequence: int) -> dict:
    return {**result, "wallet": {**result["wallet"], "sequence": sequence}}


def _with_customer(value: dict, cid: str) -> dict:
    value = dict(value)
    value["customer_id"] = cid
    if "event_id" in value:
        value["event_id"] = cid + value["event_id"]
        value["wallet"] = {**value["wallet"], "customer_id": cid}
        detail = orjson.loads(value["detail"])
        for line in detail["accumulations"]:
            line["id"] = cid + line["id"]
        value["detail"] = orjson.dumps(detail).decode()
    else:
        value["id"] = cid + value["id"]
    return value


def _stored(conn: psycopg.Connection, prefix: str) -> dict:
    rows = conn.execute("SELECT topic, partition, next_offset FROM sink_offsets WHERE topic LIKE %s",
                        (prefix + "%",)).fetchall()  # fmt: skip
    return {(tp, p): o for tp, p, o in rows}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
