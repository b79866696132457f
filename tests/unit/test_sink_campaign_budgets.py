"""campaign_budgets rows from the loyalty processor's BUDGET_DECISION commands, without Kafka or
PostgreSQL: the decisions are the real processor's (budget 100, 30 per purchase), mapped and
folded as a sink batch folds them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from schemas import topics as t
from sinks.batch import Batch
from sinks.mapping import Source, rows_for
from tests.support.budget_walk import walk


def folded(decisions: list[dict]) -> dict[str, Any]:
    """The campaign_budgets row one batch of these records writes."""
    batch = Batch()
    for n, value in enumerate(decisions):
        batch.add(value, Source(t.EVENTS_LOYALTY, 0, n), t.EVENTS_LOYALTY)
    (row,) = batch.rows["campaign_budgets"].values()
    return row


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def test_a_decision_gives_its_campaigns_spend_and_keeps_its_events_row() -> None:
    decisions, _ = walk(1)
    pairs = dict(rows_for(decisions[0], Source(t.EVENTS_LOYALTY)))
    assert pairs["events_from_event"]["kind"] == "BUDGET_DECISION"
    row = pairs["campaign_budgets"]
    assert row == {
        "campaign_id": "launch",
        "reward_id": "POINTS",
        "budget": 100.0,
        "spent": 30.0,
        "remaining": 70.0,
        "exhausted_at": None,
        "updated_at": datetime.fromtimestamp(decisions[0]["issued_at"] / 1000, UTC),
    }


def test_the_highest_spend_wins_in_any_order_and_under_replays() -> None:
    decisions, notes = walk(5)  # the 4th gets the last 10; the 5th is skipped without asking
    spent = [orjson.loads(d["payload"])["spent"] for d in decisions]
    assert spent == [30, 60, 90, 100]
    (note,) = notes
    exhausted_at = orjson.loads(note["data"])["exhausted_at"]
    want = {"campaign_id": "launch", "reward_id": "POINTS", "budget": 100.0, "spent": 100.0, "remaining": 0.0}
    for order in (decisions, decisions[::-1], decisions + decisions[:3], [decisions[3], *decisions[:3]]):
        row = folded(order)
        assert {k: row[k] for k in want} == want
        assert ms(row["exhausted_at"]) == exhausted_at


def test_on_an_equal_spend_the_later_decision_wins() -> None:
    """A budget lowered below what is spent: the next decision grants nothing, spends the same
    and says exhausted; the earlier one (same spend, not exhausted) must not win back."""
    decisions, _ = walk(1)
    later = dict(decisions[0], issued_at=decisions[0]["issued_at"] + 1000)
    payload = orjson.loads(later["payload"]) | {
        "budget": 20,
        "exhausted": True,
        "exhausted_at": later["issued_at"],
    }
    later["payload"] = orjson.dumps(payload).decode()
    for order in ([decisions[0], later], [later, decisions[0]]):
        row = folded(order)
        assert (row["budget"], row["spent"], row["remaining"]) == (20.0, 30.0, 0.0)
        assert ms(row["exhausted_at"]) == later["issued_at"]


def test_a_budget_taken_off_has_no_budget_and_no_remaining() -> None:
    decisions, _ = walk(1, budget=None)
    assert decisions == []  # an unbudgeted campaign is never asked
    (decision,) = walk(1)[0]
    off = dict(decision, payload=orjson.dumps(orjson.loads(decision["payload"]) | {"budget": None}).decode())
    row = dict(rows_for(off, Source(t.EVENTS_LOYALTY)))["campaign_budgets"]
    assert (row["budget"], row["remaining"], row["spent"]) == (None, None, 30.0)


def test_an_odd_payload_writes_only_the_events_row() -> None:
    (decision,) = walk(1)[0]
    for payload in ("{}", "not json", '{"campaign_id": ""}'):
        pairs = rows_for(dict(decision, payload=payload), Source(t.EVENTS_LOYALTY))
        assert [name for name, _ in pairs] == ["events_from_event"]
