"""Row mapping and in-batch reduction of the sink, without Kafka or PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from schemas import topics as t
from schemas.codec import decode, encode
from sinks import samples
from sinks.batch import Batch
from sinks.mapping import Source, rows_for, ts
from sinks.tables import TARGETS


def _rows(topic: str, value: dict) -> dict[str, dict]:
    # round-trip through Avro so defaults are filled as the sink sees them
    decoded = decode(encode(t.schema_for(topic), value), t.schema_for(topic))
    return dict(rows_for(decoded, Source(topic)))


def test_event_row_is_pending_until_its_result() -> None:
    ev = samples.event("c1", 1, amount=12.5)
    row = _rows(t.EVENTS_LOYALTY, ev)["events_from_event"]
    assert row["status"] == "PENDING" and row["path"] == "loyalty"
    assert orjson.loads(row["properties"]) == {"amount": 12.5}
    assert row["issued_at"] == datetime.fromtimestamp((samples.NOW + 1) / 1000, UTC)


def test_tracking_event_is_tracked() -> None:
    ev = samples.event("c1", 1, type_="PAGE_VIEW", path="tracking")
    row = _rows(t.EVENTS_TRACKING, ev)["events_from_event"]
    assert (row["status"], row["path"]) == ("TRACKED", "tracking")


def test_result_gives_event_status_ledger_lines_and_wallet() -> None:
    ev = samples.event("c1", 1)
    pairs = rows_for(samples.result(ev, 10.0, 25.0), Source(t.LOYALTY_RESULTS))
    names = [name for name, _ in pairs]
    assert names == ["events_from_result", "ledger_lines", "wallet_lines", "wallets"]
    opened = pairs[2][1]  # the wallet's line as it is now: amount = what is left
    assert (opened["id"], opened["kind"], opened["amount"]) == (f"{ev['id']}:acc", "ACCUMULATION", 10.0)
    rows = dict(pairs[:2] + pairs[3:])
    assert rows["events_from_result"]["status"] == "RESOLVED"
    summary = orjson.loads(rows["events_from_result"]["result"])
    assert summary["rules_applied"] == ["base"] and "lines" not in summary["wallet"]
    assert rows["ledger_lines"]["amount"] == 10.0
    assert rows["wallets"]["points"] == 25.0


def test_duplicate_result_changes_nothing() -> None:
    ev = samples.event("c1", 1)
    assert rows_for(samples.result(ev, 10.0, 10.0, duplicate=True), Source(t.LOYALTY_RESULTS)) == []


def test_odd_shapes_become_null_instead_of_failing() -> None:
    profile = {"customer_id": "c", "updated_at": 5, "profile": '{"rfm": 3, "points": "x"}'}
    row = rows_for(profile, Source(t.PROFILES_CHANGES))[0][1]
    assert row["points"] is None and row["rfm_score"] is None
    assert ts("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=UTC)
    assert ts("yesterday") is None and ts(True) is None


def test_tier_change_from_notification() -> None:
    n = {"id": "n1", "event": "TIER_DOWNGRADE", "customer_id": "c", "created_at": 1000,
         "data": '{"previous_tier": {"id": "gold"}, "tier": {"id": "silver"}}'}  # fmt: skip
    row = dict(rows_for(n, Source(t.NOTIFICATIONS)))["tier_changes"]
    assert (row["direction"], row["from_tier"], row["to_tier"]) == ("DOWNGRADE", "gold", "silver")


def test_tier_change_from_the_documented_flat_payload() -> None:
    data = {"customer_id": "c", "from_tier_id": "silver", "to_tier_id": "gold",
            "from_tier_name": "Silver", "to_tier_name": "Gold", "triggered_by": "EVENT"}  # fmt: skip
    n = {"id": "n2", "event": "TIER_UPGRADE", "customer_id": "c", "created_at": 1000,
         "data": orjson.dumps(data).decode()}  # fmt: skip
    row = dict(rows_for(n, Source(t.NOTIFICATIONS)))["tier_changes"]
    assert (row["direction"], row["from_tier"], row["to_tier"]) == ("UPGRADE", "silver", "gold")


def test_a_transition_keeps_the_instance_status_and_repeats_are_counted() -> None:
    batch = Batch()
    act = {"journey_id": "j", "instance_id": "i", "customer_id": "c", "at": 1}
    batch.add({**act, "id": "a1", "kind": "ENTER", "to_node": "start"}, Source(t.JOURNEYS_ACTIVITY), "ja")
    batch.add({**act, "id": "a2", "kind": "TRANSITION", "to_node": "wait"}, Source(t.JOURNEYS_ACTIVITY), "ja")
    (inst,) = batch.rows["journey_instances"].values()
    assert (inst["status"], inst["current_node"]) == ("ACTIVE", "wait")
    ev = {"id": "e", "customer_id": "c", "type": "PURCHASE", "properties": '{"amount": 1}'}
    batch.add(ev, Source(t.EVENTS_LOYALTY), "el")
    batch.add({**ev, "properties": '{"amount": 2}'}, Source(t.EVENTS_LOYALTY), "el")
    (row,) = batch.rows["events_from_event"].values()
    assert (row["properties"], row["sends"]) == ('{"amount": 1}', 2)


def test_batch_keeps_latest_wallet_and_result() -> None:
    ev = samples.event("c1", 1)
    batch = Batch()
    for processed_at, balance in [(200, 2.0), (100, 1.0), (200, 3.0)]:
        res = samples.result(ev, 1.0, balance, processed_at=processed_at)
        batch.add(res, Source(t.LOYALTY_RESULTS, 0, processed_at), "p.loyalty.results")
    assert [r["points"] for r in batch.rows["wallets"].values()] == [3.0]
    assert batch.offsets == {("p.loyalty.results", 0): 201}
    assert len(batch) == 3


def test_batch_folds_journey_and_membership_history() -> None:
    batch = Batch()
    base = {"journey_id": "j", "instance_id": "i", "customer_id": "c"}
    for n, kind, node in [(1, "ENTER", "a"), (2, "EXIT", None), (3, "ACTION", None)]:
        act = {**base, "id": str(n), "kind": kind, "to_node": node, "at": n}
        batch.add(act, Source(t.JOURNEYS_ACTIVITY, 0, n), "journeys")
    (inst,) = batch.rows["journey_instances"].values()
    assert (inst["status"], inst["current_node"]) == ("EXITED", "a")
    assert inst["entered_at"] == ts(1) and inst["updated_at"] == ts(3)
    assert len(batch.rows["journey_transitions"]) == 3


def test_every_target_statement_names_its_stage() -> None:
    for target in TARGETS.values():
        assert all(target.stage in sql for sql in target.sql())
        assert target.stage in target.stage_ddl()
