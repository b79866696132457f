"""Every kind of record every processor emits, written through the sink into PostgreSQL.

The loyalty, audiences and journeys processors run in memory (their real code, wired as
Kafka wires them) on the shipped example program; delivery's attempt and dead-letter records
are built as the sender builds them. Each (topic, kind) is written as its own batch, so a kind
that PostgreSQL refuses (as a journey TRANSITION once was: it stopped every table) fails here
by name instead of in production.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from deploy.cli import load_program
from ingest.history import Change, change_records
from processors.audiences.processor import build as build_audiences
from processors.journeys.processor import build as build_journeys
from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.testing import TestDriver
from schemas import topics as t
from schemas.codec import decode, default_codec
from schemas.program import Program
from schemas.topics import schema_for
from sinks.batch import Batch
from sinks.mapping import SOURCE_TOPICS, Source
from sinks.writer import write_batch
from tests.support.pg import query, scalar

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "program.yaml"
NOW = 1_790_000_000_000
MINUTE = 60_000
DAY = 24 * 60 * MINUTE
LOYALTY_INPUTS = (t.EVENTS_LOYALTY, "loyalty.referrals", "coupons.claims", t.CAMPAIGN_BUDGETS)

KIND = {
    t.EVENTS_LOYALTY: lambda v: v["kind"],
    t.EVENTS_TRACKING: lambda v: v["type"],
    t.LOYALTY_RESULTS: lambda v: f"{v['kind']}:{v['status']}",
    t.NOTIFICATIONS: lambda v: v["event"],
    t.PROFILES_CHANGES: lambda v: "PROFILE",
    t.AUDIENCES_MEMBERSHIP: lambda v: v["action"],
    t.JOURNEYS_ACTIVITY: lambda v: v["kind"],
    t.DELIVERIES: lambda v: v["outcome"],
    t.DELIVERY_DLQ: lambda v: "DEAD",
    t.ADMIN_AUDIT: lambda v: v["action"],
}
# the table each record of a topic must reach (the key column names the record)
TABLE = {
    t.EVENTS_LOYALTY: ("events", "id", "id"),
    t.EVENTS_TRACKING: ("events", "id", "id"),
    t.LOYALTY_RESULTS: ("events", "id", "event_id"),
    t.NOTIFICATIONS: ("notifications", "id", "id"),
    t.PROFILES_CHANGES: ("customers", "customer_id", "customer_id"),
    t.AUDIENCES_MEMBERSHIP: ("audience_membership_events", "customer_id", "customer_id"),
    t.JOURNEYS_ACTIVITY: ("journey_transitions", "id", "id"),
    t.DELIVERIES: ("webhook_deliveries", "webhook_id", "webhook_id"),
    t.DELIVERY_DLQ: ("dlq", "id", "id"),
    t.ADMIN_AUDIT: ("admin_audit", "id", "id"),
}


class Pipeline:
    """The runtime processors in memory, fed as their input topics would feed them; every
    record that lands on a sink topic is kept in order."""

    def __init__(self, program: Program) -> None:
        self.loyalty = TestDriver(LoyaltyProcessor(partitions=1), program, now=NOW)
        self.audiences = TestDriver(build_audiences(), program, now=NOW)
        self.journeys = TestDriver(build_journeys(), program, now=NOW)
        self.records: list[tuple[str, dict]] = []

    def send(self, customer: str, type_: str, path: str = "loyalty", **fields: Any) -> str:
        props = fields.pop("properties", {})
        event = {
            "id": fields.pop("id", None) or str(uuid.uuid4()),
            "customer_id": customer,
            "type": type_,
            "path": path,
            "issued_at": self.loyalty.clock.now_ms(),
            "received_at": self.loyalty.clock.now_ms(),
            "properties": orjson.dumps(props).decode(),
            **{k: orjson.dumps(v).decode() if k == "payload" else v for k, v in fields.items()},
        }
        topic = t.EVENTS_LOYALTY if path == "loyalty" else t.EVENTS_TRACKING
        self._deliver([(topic, customer, event)])
        return event["id"]

    def command(self, customer: str, kind: str, target: str | None = None, **payload: Any) -> str:
        return self.send(customer, "COMMAND", kind=kind, target_event_id=target, payload=payload)

    def advance(self, ms: int) -> None:
        for driver in (self.loyalty, self.audiences, self.journeys):
            self._deliver(driver.advance(ms))

    def _deliver(self, records: list[tuple[str, str, dict]]) -> None:
        queue = list(records)
        while queue:
            topic, key, value = queue.pop(0)
            if topic in SOURCE_TOPICS:
                self.records.append((topic, as_consumed(topic, value)))
            for driver in self._readers(topic):
                queue += driver.send(topic, key, value)

    def _readers(self, topic: str) -> list[TestDriver]:
        if topic in LOYALTY_INPUTS:
            return [self.loyalty, self.journeys] if topic == t.EVENTS_LOYALTY else [self.loyalty]
        return {
            t.EVENTS_TRACKING: [self.journeys],
            t.PROFILES_CHANGES: [self.audiences, self.journeys],
            t.AUDIENCES_MEMBERSHIP: [self.journeys],
        }.get(topic, [])


def as_consumed(topic: str, value: dict) -> dict:
    """The record as the sink decodes it off the topic (defaults filled in)."""
    codec, schema = default_codec(), schema_for(topic)
    return codec.decode(codec.encode(schema, value), schema)


def demo_day(p: Pipeline) -> None:
    """A day of the example program that reaches every kind its processors emit."""
    p.command("ann", "REGISTER")
    for _ in range(3):
        p.send("ann", "PURCHASE", properties={"amount": 2000, "category": "electronics"})
    p.send("ann", "PURCHASE", properties={"amount": 5}, redeem=[{"reward_id": "POINTS", "amount": 50}])
    p.send("ann", "PURCHASE", properties={"amount": 5}, redeem=[{"reward_id": "POINTS", "amount": 10**9}])
    p.send("ann", "REVIEW", properties={"stars": 5})
    p.command("ann", "ADJUST", amount=100, reward_id="POINTS", reason="goodwill")  # direct points
    p.command("ann", "ADJUST", amount=-30, reward_id="POINTS", reason="correction")
    p.send("bob", "PURCHASE", properties={"amount": 300})
    order = p.send("bob", "PURCHASE", properties={"amount": 30}, fulfilled=False,
                   redeem=[{"reward_id": "POINTS", "amount": 10}])  # fmt: skip
    p.command("bob", "FULFILL", order)
    kept = p.send("bob", "PURCHASE", properties={"amount": 30}, fulfilled=False)
    p.command("bob", "CANCEL", kept)
    p.send("bob", "PURCHASE", properties={"amount": 30}, fulfilled=False)  # expires
    big = p.send("cy", "PURCHASE", properties={"amount": 9000})
    p.command("cy", "REVERSE", big)
    p.send("dee", "ADD_TO_CART", path="tracking", properties={"sku": "mug"})
    p.send("dee", "PAGE_VIEW", path="tracking", properties={"url": "/mug"})
    p.send("eve", "ADD_TO_CART", path="tracking", properties={"sku": "cup"})
    p.send("eve", "PURCHASE", properties={"amount": 12})
    p.advance(31 * MINUTE)
    p.advance(DAY)


def delivery_records(notifications: list[dict]) -> list[tuple[str, dict]]:
    """Delivery's own records (built as processors.delivery.sender builds them)."""
    note = notifications[0]
    attempt = {"webhook_id": note["id"], "endpoint_id": "demo", "event": note["event"],
               "customer_id": note["customer_id"], "status_code": None, "latency_ms": 1.5,
               "error": None, "at": NOW}  # fmt: skip
    outcomes = ("DELIVERED", "RETRY", "DLQ", "DISABLED", "FAILED")
    out = [(t.DELIVERIES, {**attempt, "attempt": n, "outcome": o}) for n, o in enumerate(outcomes, 1)]
    dead = {**note, "endpoint_id": "demo", "attempt": 7, "last_error": "HTTP 500"}
    return [(topic, as_consumed(topic, v)) for topic, v in [*out, (t.DELIVERY_DLQ, dead)]]


def audit_records(program: Program) -> list[tuple[str, dict]]:
    """Ingest's admin audit records of one program publish (ingest/history.py builds them)."""
    extra = change_records(program, Change(actor="walker", action="campaigns.update", resource="campaigns/x"))
    return [(topic, decode(raw, "AdminAudit")) for topic, _, raw in extra(program, program.version + 1)
            if topic == t.ADMIN_AUDIT]  # fmt: skip


@pytest.fixture(scope="module")
def walked() -> dict[tuple[str, str], list[dict]]:
    program = load_program(EXAMPLE, env={"RECEIVER_URL": "http://127.0.0.1:9"})
    pipeline = Pipeline(program)
    demo_day(pipeline)
    notes = [v for topic, v in pipeline.records if topic == t.NOTIFICATIONS]
    by_kind: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for topic, value in [*pipeline.records, *delivery_records(notes), *audit_records(program)]:
        by_kind[(topic, KIND[topic](value))].append(value)
    return by_kind


def test_the_walk_reaches_every_kind(walked: dict) -> None:
    kinds = defaultdict(set)
    for topic, kind in walked:
        kinds[topic].add(kind)
    assert kinds[t.JOURNEYS_ACTIVITY] == {"ENTER", "TRANSITION", "ACTION", "EXIT", "COMPLETE"}
    assert kinds[t.AUDIENCES_MEMBERSHIP] == {"ENTER", "LEAVE"}
    statuses = {k.split(":")[1] for k in kinds[t.LOYALTY_RESULTS]}
    assert statuses >= {"RESOLVED", "FAILED", "PENDING", "CANCELLED", "EXPIRED", "REVERSED"}
    assert kinds[t.NOTIFICATIONS] >= {
        "CUSTOMER_REGISTRATION", "CUSTOMER_ACCUMULATION", "CUSTOMER_REDEMPTION",
        "REWARDS_RESERVATION", "REWARDS_RESERVATION_CANCELLED", "TIER_UPGRADE", "TIER_DOWNGRADE",
        "BEHAVIOR_EVENT_FAILED", "BADGE_AWARDED", "BADGE_REVOKED", "ACHIEVEMENT_PROGRESS",
        "HIGH_ROLLER",  # the high-roller campaign's webhook reaction
    }  # fmt: skip
    assert set(kinds) == set(SOURCE_TOPICS)


def test_every_kind_lands_in_its_table_and_nothing_is_refused(walked: dict, sink_db: str) -> None:
    offsets: dict[str, int] = defaultdict(int)
    refused = {}
    with psycopg.connect(sink_db) as conn:
        for (topic, kind), values in sorted(walked.items()):
            batch = Batch()
            start = {(topic, 0): offsets[topic]} if offsets[topic] else {}
            for value in values:
                batch.add(value, Source(topic, 0, offsets[topic]), topic)
                offsets[topic] += 1
            written = write_batch(conn, batch, start)
            if written.rejects:
                refused[(topic, kind)] = [r.error for r in written.rejects]
    assert refused == {}
    missing = []
    for (topic, kind), values in walked.items():
        table, column, field = TABLE[topic]
        for value in values:
            found = scalar(sink_db, f"SELECT count(*) FROM {table} WHERE {column} = %s", value[field])
            if not found:
                missing.append((topic, kind, table, value[field]))
    assert missing == []
    assert scalar(sink_db, "SELECT count(*) FROM tier_changes WHERE to_tier IS NOT NULL") >= 2
    assert scalar(sink_db, "SELECT count(*) FROM tier_changes WHERE to_tier IS NULL") == 0
    open_points = "SELECT sum(amount) FROM wallet_lines WHERE customer_id = %s AND reward_id = 'POINTS'"
    wallet = "SELECT points FROM wallets WHERE customer_id = %s"
    assert scalar(sink_db, open_points, "ann") == scalar(sink_db, wallet, "ann") > 0
    adjusted = "SELECT sum(amount) FROM ledger_lines WHERE kind = 'ADJUSTMENT' AND line->>'reason' <> ''"
    assert scalar(sink_db, adjusted) == 70
    # customer_badges: the achievement's and the campaign's badges; cy's order was reversed
    held = "SELECT string_agg(customer_id || ':' || badge_id, ',' ORDER BY 1) FROM customer_badges"
    held += " WHERE count > 0"
    assert scalar(sink_db, held) == "ann:high-roller,ann:regular,bob:high-roller,bob:regular"
    revoked = "SELECT count(*) FROM customer_badges WHERE customer_id = 'cy' AND count = 0"
    revoked += " AND revoked_at IS NOT NULL"
    assert scalar(sink_db, revoked) == 1
    # campaign_budgets: the budgeted electronics-bonus spent what its accumulation lines credited
    budgets = query(
        sink_db, "SELECT campaign_id, reward_id, budget, spent, remaining, exhausted_at FROM campaign_budgets"
    )
    credited = "SELECT sum(amount) FROM ledger_lines WHERE kind = 'ACCUMULATION' AND campaign_id = %s"
    spent = scalar(sink_db, credited, "electronics-bonus")
    assert spent > 0
    assert budgets == [("electronics-bonus", "POINTS", 1_000_000, spent, 1_000_000 - spent, None)]
