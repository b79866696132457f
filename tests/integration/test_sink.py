"""The sink against real Kafka and PostgreSQL: rows land once, in their final state."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import psycopg
import pytest

from processors.runtime.testing import wait_for
from schemas import topics as t
from schemas.settings import Settings
from sinks import samples
from sinks.batch import Batch
from sinks.mapping import Source
from sinks.sink import Sink, SinkOptions
from sinks.writer import Fenced, load_offsets, write_batch
from tests.support.pg import committed, query, scalar

pytestmark = pytest.mark.integration


def test_events_results_ledger_and_wallets_land_exactly_once(cfg: Settings, sink: Sink) -> None:
    records = samples.stream(customers=20, per_customer=10)
    prefix = cfg.topic_prefix
    records = [(tp, prefix + k, _rekey(v, prefix)) for tp, k, v in records]
    samples.produce(cfg, records)
    wait_for(lambda: committed(cfg) == len(records))
    url = cfg.database_url
    like = prefix + "%"
    rows = query(
        url,
        "SELECT status, path, count(*), sum(points) FROM events WHERE customer_id LIKE %s GROUP BY 1, 2",
        like,
    )
    assert rows == [("RESOLVED", "loyalty", 200, 20 * 55.0)]
    credited = "SELECT sum(amount) FROM ledger_lines WHERE kind = 'ACCUMULATION' AND customer_id LIKE %s"
    assert scalar(url, credited, like) == 20 * 55.0
    wallets = query(url, "SELECT points, lifetime FROM wallets WHERE customer_id LIKE %s", like)
    assert wallets == [(55.0, 55.0)] * 20
    props = scalar(
        url,
        "SELECT properties->>'amount' FROM events WHERE customer_id = %s AND reference = 'ref-3'",
        prefix + "c0",
    )
    assert props == "4.0"


def _rekey(value: dict, prefix: str) -> dict:
    """Give every test its own customer and event ids (the database is shared by the module:
    a repeated event id keeps the first send's row)."""
    value = dict(value)
    value["customer_id"] = prefix + value["customer_id"]
    if "event_id" in value:
        value["event_id"] = prefix + value["event_id"]
        value["wallet"] = {**value["wallet"], "customer_id": value["customer_id"]}
        detail = orjson.loads(value["detail"])
        for line in detail.get("accumulations", []) + detail.get("redemptions", []):
            line["id"] = prefix + line["id"]
            line["event_id"] = prefix + line.get("event_id", "")
        value["detail"] = orjson.dumps(detail).decode()
    else:
        value["id"] = prefix + value["id"]
    return value


def test_result_before_event_and_latest_result_wins(cfg: Settings, sink: Sink) -> None:
    cid = cfg.topic_prefix + "ooo"
    ev = samples.event(cid, 1, amount=30.0)
    first = samples.result(ev, 30.0, 30.0, processed_at=samples.NOW + 100)
    reversed_ = samples.result(ev, 0.0, 0.0, status="REVERSED", processed_at=samples.NOW + 200)
    dup = samples.result(ev, 30.0, 30.0, processed_at=samples.NOW + 300, duplicate=True)
    stale = samples.result(ev, 30.0, 30.0, processed_at=samples.NOW + 150)
    tracking = samples.event(cid, 2, type_="PAGE_VIEW", path="tracking")
    records = [
        (t.LOYALTY_RESULTS, cid, first),
        (t.LOYALTY_RESULTS, cid, reversed_),
        (t.LOYALTY_RESULTS, cid, dup),
        (t.LOYALTY_RESULTS, cid, stale),
        (t.EVENTS_LOYALTY, cid, ev),
        (t.EVENTS_TRACKING, cid, tracking),
    ]
    samples.produce(cfg, records)
    wait_for(lambda: committed(cfg) == len(records))
    url = cfg.database_url
    row = query(
        url,
        "SELECT status, points, path, properties->>'amount', result->>'status', issued_at "
        "IS NOT NULL FROM events WHERE id = %s",
        ev["id"],
    )
    assert row == [("REVERSED", 0.0, "loyalty", "30.0", "REVERSED", True)]
    assert scalar(url, "SELECT points FROM wallets WHERE customer_id = %s", cid) == 0.0
    assert query(url, "SELECT status, path FROM events WHERE id = %s", tracking["id"]) == [
        ("TRACKED", "tracking")
    ]


def test_profiles_notifications_audiences_journeys_and_deliveries(cfg: Settings, sink: Sink) -> None:
    cid = cfg.topic_prefix + "x"
    profile = {
        "customer_id": cid, "anonymous": False, "identified": True, "consent": {"email": True},
        "tier": "gold", "tags": ["vip"], "purchase_count": 3, "total_spend": 120.5,
        "last_purchase_at": samples.NOW, "events_by_type": {"PURCHASE": 3}, "event_count": 3,
        "last_event_at": samples.NOW, "first_seen": samples.NOW - 1000, "lifetime_points": 120,
        "points": 80, "birthday": "1990-05-01", "registered_at": samples.NOW - 500,
        "rfm": {"recency": 5, "frequency": 3, "monetary": 4, "score": "534"}, "traits": {},
    }  # fmt: skip
    older = dict(profile, purchase_count=1)
    tier = '{"from_tier": "silver", "to_tier": "gold"}'
    delivery = {
        "webhook_id": "w1",
        "endpoint_id": cid,
        "event": "TIER_UPGRADE",
        "customer_id": cid,
        "attempt": 1,
        "status_code": 500,
        "outcome": "RETRY",
        "at": 5,
    }
    records = [
        (t.PROFILES_CHANGES, cid, _profile(cid, profile, samples.NOW + 10)),
        (t.PROFILES_CHANGES, cid, _profile(cid, older, samples.NOW + 5)),
        (t.NOTIFICATIONS, cid, _notification(cid, data=tier)),
        (t.AUDIENCES_MEMBERSHIP, cid, _membership(cid, "a1", "ENTER", 1)),
        (t.AUDIENCES_MEMBERSHIP, cid, _membership(cid, "a2", "ENTER", 2)),
        (t.AUDIENCES_MEMBERSHIP, cid, _membership(cid, "a2", "LEAVE", 3)),
        (t.JOURNEYS_ACTIVITY, cid, _activity(cid, 1, "ENTER", to_node="start")),
        (t.JOURNEYS_ACTIVITY, cid, _activity(cid, 2, "TRANSITION", from_node="start",
                                             to_node="wait")),
        (t.JOURNEYS_ACTIVITY, cid, _activity(cid, 3, "ACTION", action="email")),
        (t.JOURNEYS_ACTIVITY, cid, _activity(cid, 4, "EXIT")),
        (t.DELIVERIES, cid, delivery),
        (t.DELIVERY_DLQ, cid, _notification(cid, endpoint_id="e1", attempt=7, last_error="boom")),
    ]  # fmt: skip
    samples.produce(cfg, records)
    wait_for(lambda: committed(cfg) == len(records))
    url = cfg.database_url
    assert query(
        url,
        "SELECT tier, purchase_count, rfm_score, profile->>'birthday' FROM customers WHERE customer_id = %s",
        cid,
    ) == [("gold", 3.0, "534", "1990-05-01")]
    assert query(
        url, "SELECT direction, from_tier, to_tier FROM tier_changes WHERE customer_id = %s", cid
    ) == [("UPGRADE", "silver", "gold")]
    assert query(url, "SELECT audience_id FROM audience_members WHERE customer_id = %s", cid) == [("a1",)]
    assert scalar(url, "SELECT count(*) FROM audience_membership_events WHERE customer_id = %s", cid) == 3
    assert query(url, "SELECT status, current_node FROM journey_instances WHERE customer_id = %s", cid) == [
        ("EXITED", "wait")
    ]
    assert scalar(url, "SELECT count(*) FROM journey_transitions WHERE customer_id = %s", cid) == 4
    assert scalar(url, "SELECT outcome FROM webhook_deliveries WHERE endpoint_id = %s", cid) == ("RETRY")
    assert scalar(url, "SELECT last_error FROM dlq WHERE customer_id = %s", cid) == "boom"


def _notification(cid: str, **kw: Any) -> dict:
    base = {"id": cid + "n1", "event": "TIER_UPGRADE", "customer_id": cid, "data": "{}"}
    return {**base, "created_at": samples.NOW, **kw}


def _membership(cid: str, audience: str, action: str, at: int) -> dict:
    return {"audience_id": audience, "customer_id": cid, "action": action, "at": at}


def _activity(cid: str, n: int, kind: str, **kw: Any) -> dict:
    return {"id": f"{cid}{n}", "journey_id": "j1", "instance_id": cid + "-i1",
            "customer_id": cid, "kind": kind, "at": 10 + n, **kw}  # fmt: skip


def _profile(cid: str, profile: dict, updated_at: int) -> dict:
    return {
        "customer_id": cid,
        "tier": profile["tier"],
        "updated_at": updated_at,
        "profile": orjson.dumps(profile).decode(),
    }


def test_restart_resumes_from_postgres_offsets(cfg: Settings) -> None:
    prefix = cfg.topic_prefix
    first = [(tp, prefix + k, _rekey(v, prefix)) for tp, k, v in samples.stream(5, 4)]
    samples.produce(cfg, first)
    sink = Sink(cfg, SinkOptions(batch_size=7, linger_ms=20)).start()
    wait_for(lambda: committed(cfg) == len(first))
    sink.stop()
    more = [(tp, prefix + k, _rekey(v, prefix)) for tp, k, v in samples.stream(6, 5)[-10:]]
    samples.produce(cfg, more)
    sink = Sink(cfg, SinkOptions(batch_size=7, linger_ms=20)).start()
    try:
        wait_for(lambda: committed(cfg) == len(first) + len(more))
    finally:
        sink.stop()
    url = cfg.database_url
    assert scalar(url, "SELECT count(*) FROM events WHERE customer_id LIKE %s", prefix + "%") == 25


def test_analytics_views_answer(cfg: Settings, sink: Sink) -> None:
    prefix = cfg.topic_prefix
    cid = prefix + "v"
    now = int(time.time() * 1000)
    recs = [(t.EVENTS_TRACKING, cid, samples.event(cid, i, "APP_OPEN", path="tracking",
             issued_at=now - i * 1000)) for i in range(10)]  # fmt: skip
    recs.append((t.EVENTS_TRACKING, cid, samples.event(cid, 99, "REVIEW", issued_at=now)))
    samples.produce(cfg, recs)
    wait_for(lambda: committed(cfg) == len(recs))
    url = cfg.database_url
    assert scalar(url, "SELECT events FROM v_events_per_customer WHERE customer_id = %s", cid) == 11
    seg = query(
        url,
        "SELECT segment FROM v_segment_members WHERE customer_id = %s ORDER BY segment",
        cid,
    )
    assert seg == [("advocate",), ("high_engager",)]
    assert scalar(url, "SELECT events_30d FROM v_event_frequency WHERE customer_id = %s", cid) == 11
    assert scalar(url, "SELECT count(*) FROM v_events_by_type WHERE type = 'APP_OPEN'") >= 1
    assert query(url, "SELECT * FROM v_points_per_event_type") is not None


def test_a_zombie_batch_is_fenced_and_writes_nothing(sink_db: str) -> None:
    """A batch whose start offset no longer matches PostgreSQL's is refused as a whole."""
    topic = f"z{uuid.uuid4().hex[:6]}.events.loyalty"
    ev = samples.event("zombie", 1)
    batch = Batch()
    batch.add(ev, Source(t.EVENTS_LOYALTY, 0, 0), topic)
    with psycopg.connect(sink_db, autocommit=True) as conn:
        write_batch(conn, batch, {})  # the live owner commits offset 0 -> 1
        late = Batch()
        late.add(samples.event("zombie", 2), Source(t.EVENTS_LOYALTY, 0, 0), topic)
        with pytest.raises(Fenced):
            write_batch(conn, late, {})  # a zombie that also started from "nothing stored"
        assert load_offsets(conn, [topic]) == {(topic, 0): 1}
        rows = conn.execute("SELECT count(*) FROM events WHERE customer_id = 'zombie'")
        assert rows.fetchone() == (1,)
