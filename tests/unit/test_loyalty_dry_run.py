"""DRY_RUN on the loyalty processor (processors/loyalty/dry_run.py), on the in-memory driver with
murmur2 partitions as production: the one reply says what the event would do against the
customer's real state, equal to what the event then does for real, and nothing else changes (no
store write, no timer, no other record). Plus the copy-on-write Overlay on its own."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from processors.loyalty.dry_run import Overlay, command
from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.store import MemoryBackend, TransactionalStore
from processors.runtime.testing import Emitted, TestDriver
from schemas.program import Program

NOW = 1_790_000_000_000
PARTITIONS = 6
REKEYED = ("events.loyalty", "loyalty.referrals", "coupons.claims", "campaigns.budgets")
REPLIES = "loyalty.dry_run.replies"
PROGRAM = Program.model_validate({
    "version": 3,
    "campaigns": [
        {"id": "spend", "condition": "properties.amount > 0", "formula": "properties.amount"},
        {"id": "first", "condition": "true", "formula": "5", "per_customer_limit": 1},
        {"id": "launch", "condition": "properties.amount >= 100", "formula": "30", "budget": 45},
    ],
    "tiers": {"levels": [
        {"id": "bronze", "name": "Bronze", "level": 0},
        {"id": "gold", "name": "Gold", "level": 1, "entry": "profile.lifetime_points >= 100"},
    ]},
})  # fmt: skip


def purchase(customer: str, amount: float, event_id: str | None = None) -> dict[str, Any]:
    properties = orjson.dumps({"amount": amount}).decode()
    return {"id": event_id or str(uuid.uuid4()), "customer_id": customer, "type": "PURCHASE",
            "issued_at": NOW, "received_at": NOW, "properties": properties}  # fmt: skip


class Loyalty:
    def __init__(self) -> None:
        self.driver = TestDriver(LoyaltyProcessor(PARTITIONS), PROGRAM, now=NOW, partitions=PARTITIONS)

    def send(self, key: str, value: dict[str, Any], topic: str = "events.loyalty") -> list[Emitted]:
        out = self.driver.send(topic, key, value)
        everything, queue = list(out), [r for r in out if r[0] in REKEYED]
        while queue:
            more = self.driver.send(*queue.pop(0))
            everything += more
            queue += [r for r in more if r[0] in REKEYED]
        return everything

    def stores(self) -> dict[int, dict[str, dict[str, Any]]]:
        return {p: {n: dict(s.range()) for n, s in t.stores.items()} for p, t in self.driver.tasks.items()}

    def dry_run(self, event: dict[str, Any]) -> tuple[dict[str, Any], list[Emitted]]:
        request_id = str(uuid.uuid4())
        out = self.send(event["customer_id"], command(request_id, event, "ingest-1"))
        replies = [v for t, k, v in out if t == REPLIES and k == request_id]
        assert len(replies) == 1, out
        return replies[0], out


def test_dry_run_answers_from_the_real_state_and_changes_nothing():
    loyalty = Loyalty()
    loyalty.send("ann", purchase("ann", 60))  # spend 60 + first 5
    before = loyalty.stores()
    event = purchase("ann", 40)
    reply, out = loyalty.dry_run(event)
    assert [t for t, _, _ in out] == [REPLIES]  # no result, notification, profile or timer
    assert loyalty.stores() == before  # no store written, timers included
    assert reply["found"] is True and reply["already_processed"] is False
    assert reply["reply_to"] == "ingest-1" and reply["program_version"] == 3
    assert (reply["tier"]["before"]["id"], reply["tier"]["after"]["id"]) == ("bronze", "gold")
    (res,) = reply["results"]
    detail = orjson.loads(res["detail"])
    skipped = {s["campaign_id"]: s["reason"] for s in detail["rules_skipped"]}
    assert res["points"] == 40 and skipped["first"] == "per-customer limit of 1 reached"
    assert [n["event"] for n in reply["notifications"]] == ["CUSTOMER_ACCUMULATION", "TIER_UPGRADE"]

    real = loyalty.send("ann", event)  # the same event for real does what the dry run said
    (got,) = [v for t, _, v in real if t == "loyalty.results"]
    assert (got["points"], got["wallet"]) == (res["points"], res["wallet"])
    assert orjson.loads(got["detail"]) == detail
    hooks = [v["event"] for t, _, v in real if t == "notifications"]
    assert hooks == [n["event"] for n in reply["notifications"]]
    again, _ = loyalty.dry_run(event)  # now processed: a duplicate answers the first result
    assert again["already_processed"] is True
    assert orjson.loads(again["results"][0]["detail"])["duplicate"] is True


@pytest.mark.parametrize(("customer", "exact"), [("bob", True), ("carl", False)])
def test_budgeted_award_is_decided_within_the_dry_run(customer: str, exact: bool):
    """bob's partition (0) owns the campaign's ledger, carl's (4) does not."""
    loyalty = Loyalty()
    assert (loyalty.driver.partition_for(customer) == loyalty.driver.partition_for("launch")) is exact
    loyalty.send(customer, purchase(customer, 100))  # launch: 30 of its 45
    before = loyalty.stores()
    reply, out = loyalty.dry_run(purchase(customer, 200))
    assert [t for t, _, _ in out] == [REPLIES] and loyalty.stores() == before
    (budget,) = reply["budgets"]
    assert (budget["campaign_id"], budget["requested"], budget["exact"]) == ("launch", 30.0, exact)
    (res,) = reply["results"]
    events = [n["event"] for n in reply["notifications"]]
    if exact:  # what is left of the budget, and the webhook of its end
        assert (budget["granted"], res["points"]) == (15.0, 215) and "CAMPAIGN_BUDGET_EXHAUSTED" in events
    else:  # decided on another partition: taken as not spent
        assert (budget["granted"], res["points"]) == (30.0, 230) and "CAMPAIGN_BUDGET_EXHAUSTED" not in events


def test_a_new_customer_and_a_rejected_event():
    loyalty = Loyalty()
    reply, out = loyalty.dry_run(purchase("newbie", 10))
    assert reply["found"] is False and reply["tier"]["before"] is None
    assert reply["results"][0]["points"] == 15 and loyalty.stores()[0]["customers"] == {}
    bad = {**purchase("newbie", 1), "type": "NOPE"}
    reply, _ = loyalty.dry_run(bad)
    assert reply["results"][0]["status"] == "REJECTED"


def test_overlay_reads_through_and_keeps_writes_to_itself():
    base = TransactionalStore("s", MemoryBackend())
    base.put("a", {"n": 1})
    base.put("c", 3)
    base.commit(None)
    base.put("b", 2)  # the open transaction's write: the overlay sees it too
    view = Overlay(base)
    assert view.get("a") == {"n": 1} and view.get("b") == 2 and view.get("x", "none") == "none"
    view.put("a", {"n": 9})
    view.delete("c")
    view.put("d", 4)
    got = view.get("a")
    got["n"] = 100  # a copy: changing what get returned changes nothing
    assert view.get("a") == {"n": 9} and view.get("c") is None
    assert list(view.range()) == [("a", {"n": 9}), ("b", 2), ("d", 4)]
    assert list(view.range("b", "d")) == [("b", 2)]
    assert base.get("a") == {"n": 1} and base.get("c") == 3 and base.get("d") is None
    assert base.changelog() == {b"b": b"2"}  # the real store's open writes are untouched


def test_a_merged_customer_is_answered_by_the_customer_it_was_merged_into():
    loyalty = Loyalty()
    loyalty.send("known", purchase("known", 60))
    anon = loyalty.driver.partition_for("anon-1")
    task = loyalty.driver.tasks[anon]
    task.stores["customers"].put("anon-1", {"customer_id": "anon-1", "merged_into": "known"})
    task.commit({})
    before = loyalty.stores()
    reply, out = loyalty.dry_run(purchase("anon-1", 10))
    assert loyalty.stores() == before
    kinds = [(t, v.get("kind")) for t, _, v in out]
    assert kinds == [("events.loyalty", "DRY_RUN"), (REPLIES, None)]  # re-asked on known's partition
    assert reply["customer_id"] == "known" and reply["partition"] == loyalty.driver.partition_for("known")
    assert reply["results"][0]["points"] == 10 and reply["found"] is True


def test_a_dry_run_that_fails_answers_the_error_and_touches_nothing(monkeypatch):
    loyalty = Loyalty()
    loyalty.send("ann", purchase("ann", 60))
    before = loyalty.stores()

    def broken(ctx, event):
        ctx.store("customers").put("ann", {"customer_id": "ann", "broken": True})
        raise RuntimeError("boom")

    monkeypatch.setattr(loyalty.driver.processor, "_event", broken)
    reply, out = loyalty.dry_run(purchase("ann", 10))
    assert reply["error"] == "RuntimeError: boom" and [t for t, _, _ in out] == [REPLIES]
    assert loyalty.stores() == before
