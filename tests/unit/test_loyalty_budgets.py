"""Exact campaign budgets (reserved on the campaign's partition through campaigns.budgets) and
per-period caps per customer, through the real processor on the TestDriver (murmur2 partitions,
as production)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from processors.delivery.routing import request_body
from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.testing import Emitted, TestDriver
from schemas.program import Program

NOW = 1_790_000_000_000  # 2026-09-21 (a Monday) 14:13 UTC
DAY = 86_400_000
PARTITIONS = 6
REKEYED = ("events.loyalty", "loyalty.referrals", "coupons.claims", "campaigns.budgets")
BUDGETED = {"id": "launch", "name": "Launch", "formula": "30", "budget": 100}


def program(*campaigns: dict[str, Any], version: int = 1) -> Program:
    return Program.model_validate({"version": version, "campaigns": list(campaigns)})


class Loyalty:
    """The loyalty processor over PARTITIONS partitions, re-keyed records fed back as Kafka
    would (`pump`), or left in flight (`pump=False`)."""

    def __init__(self, prog: Program) -> None:
        self.driver = TestDriver(LoyaltyProcessor(PARTITIONS), prog, now=NOW, partitions=PARTITIONS)

    def buy(self, customer: str, pump: bool = True, **fields: Any) -> list[Emitted]:
        event = {
            "id": fields.pop("id", None) or str(uuid.uuid4()),
            "customer_id": customer,
            "type": "PURCHASE",
            "issued_at": fields.pop("issued_at", self.driver.clock.now_ms()),
            "received_at": self.driver.clock.now_ms(),
            "properties": orjson.dumps(fields.pop("properties", {"amount": 10})).decode(),
            **{k: orjson.dumps(v).decode() if k == "payload" else v for k, v in fields.items()},
        }
        out = self.driver.send("events.loyalty", customer, event)
        return self.pump(out) if pump else out

    def command(self, customer: str, kind: str, target: str, pump: bool = True) -> list[Emitted]:
        return self.buy(customer, pump, type="COMMAND", kind=kind, target_event_id=target, payload={})

    def pump(self, out: list[Emitted]) -> list[Emitted]:
        everything, queue = list(out), [r for r in out if r[0] in REKEYED]
        while queue:
            more = self.driver.send(*queue.pop(0))
            everything += more
            queue += [r for r in more if r[0] in REKEYED]
        return everything


def results(out: list[Emitted]) -> list[dict]:
    return [{**v, "detail": orjson.loads(v["detail"])} for t, _, v in out if t == "loyalty.results"]


def result(out: list[Emitted]) -> dict:
    (res,) = results(out)
    return res


def hooks(out: list[Emitted], event: str) -> list[dict]:
    return [orjson.loads(request_body(v)) for t, _, v in out if t == "notifications" and v["event"] == event]


def skipped(res: dict) -> dict[str, str]:
    return {s["campaign_id"]: s["reason"] for s in res["detail"]["rules_skipped"]}


def spread(n: int) -> list[str]:
    """n customers on n different partitions (n <= PARTITIONS)."""
    driver = TestDriver(LoyaltyProcessor(PARTITIONS), Program(), partitions=PARTITIONS)
    seen: dict[int, str] = {}
    for i in range(1000):
        seen.setdefault(driver.partition_for(f"c{i}"), f"c{i}")
    assert len(seen) == PARTITIONS
    return list(seen.values())[:n]


def test_a_budget_is_granted_exactly_across_partitions_then_refused() -> None:
    shop = Loyalty(program(BUDGETED))
    got = [result(shop.buy(c)) for c in spread(5)]
    assert [r["points"] for r in got] == [30, 30, 30, 10, 0]  # 100 in all: the 4th gets what is left
    assert sum(r["wallet"]["points"] for r in got) == 100
    assert got[3]["detail"]["rules_applied"][0]["amount"] == 10
    assert skipped(got[4]) == {"launch": "budget exhausted"}
    assert got[4]["status"] == "RESOLVED" and got[4]["detail"]["accumulations"] == []


def test_the_result_waits_for_the_campaign_partition_and_a_repeat_is_not_asked_twice() -> None:
    shop = Loyalty(program(BUDGETED, {"id": "plain", "formula": "5"}))
    event_id = str(uuid.uuid4())
    first = shop.buy("ann", pump=False, id=event_id)
    assert results(first) == []  # held until the budget is decided
    (request,) = [(t, k, v) for t, k, v in first if t == "campaigns.budgets"]
    assert request[1] == "launch" and request[2]["kind"] == "BUDGET_RESERVE"
    assert shop.driver.partition_for("launch") != shop.driver.partition_for("ann")  # decided elsewhere
    assert [h["data"]["lines"][0]["amount"] for h in hooks(first, "CUSTOMER_ACCUMULATION")] == [5]
    assert shop.buy("ann", pump=False, id=event_id) == []  # a repeat in flight: nothing, not asked again
    decided = shop.pump(first)
    res = result(decided)
    assert res["event_id"] == event_id and res["points"] == 35 and res["wallet"]["points"] == 35
    assert {a["campaign_id"] for a in res["detail"]["rules_applied"]} == {"plain", "launch"}
    assert sorted(line["amount"] for line in res["wallet"]["lines"]) == [5, 30]  # the sink's lines
    assert [h["data"]["lines"][0]["amount"] for h in hooks(decided, "CUSTOMER_ACCUMULATION")] == [5, 30]
    again = result(shop.buy("ann", id=event_id))
    assert again["detail"]["duplicate"] is True and again["points"] == 35
    ledger = shop.driver.store("budgets", shop.driver.partition_for("launch"))
    assert ledger["campaign:launch"]["spent"] == 30  # the repeats asked nothing more


def test_exhaustion_is_notified_once_and_again_after_the_budget_is_raised() -> None:
    shop = Loyalty(program(BUDGETED))
    customers = spread(6)
    out: list[Emitted] = []
    for c in customers:
        out += shop.buy(c)
    (note,) = hooks(out, "CAMPAIGN_BUDGET_EXHAUSTED")
    data = note["data"]
    assert data["campaign_id"] == "launch" and data["campaign_name"] == "Launch"
    assert (data["budget"], data["spent"], data["reward_id"]) == (100, 100, "POINTS")
    assert data["customer_id"] == customers[3] and data["exhausted_at"] == NOW
    shop.driver.apply_config(program({**BUDGETED, "budget": 160}, version=2))
    more: list[Emitted] = []
    for c in customers:
        more += shop.buy(c)
    assert sum(r["points"] for r in results(more)) == 60
    (raised,) = hooks(more, "CAMPAIGN_BUDGET_EXHAUSTED")
    assert raised["data"]["budget"] == 160 and raised["data"]["spent"] == 160
    ids = [
        v["id"]
        for t, _, v in out + more
        if t == "notifications" and v["event"] == "CAMPAIGN_BUDGET_EXHAUSTED"
    ]
    assert len(set(ids)) == 2


def test_a_partition_that_saw_the_budget_exhausted_does_not_ask_again() -> None:
    shop = Loyalty(program({**BUDGETED, "budget": 30}))
    (first,) = spread(1)
    shop.buy(first)
    assert skipped(result(shop.buy(first))) == {"launch": "budget exhausted"}  # learned from the reply
    out = shop.buy(first, pump=False)
    assert skipped(result(out)) == {"launch": "budget exhausted"}
    assert [t for t, _, _ in out if t == "campaigns.budgets"] == []


def test_per_period_caps_per_customer() -> None:
    daily = {"id": "daily", "formula": "10", "limits": {"per_customer_per_day": 2}}
    monthly = {"id": "monthly", "formula": "1", "limits": {"per_customer_per_month": 3}}
    shop = Loyalty(program(daily, monthly))
    got = [result(shop.buy("ann")) for _ in range(3)]
    assert [r["points"] for r in got] == [11, 11, 1]
    assert skipped(got[2]) == {"daily": "per-customer limit of 2 per day reached"}
    assert result(shop.buy("bob"))["points"] == 11  # per customer
    shop.driver.advance(DAY)
    nxt = result(shop.buy("ann"))
    assert nxt["points"] == 10 and skipped(nxt) == {"monthly": "per-customer limit of 3 per month reached"}
    late = result(shop.buy("ann", issued_at=NOW))  # counted in the day it happened
    assert skipped(late) == {
        "daily": "per-customer limit of 2 per day reached",
        "monthly": "per-customer limit of 3 per month reached",
    }
    shop.driver.advance(10 * DAY)  # 2026-10-01 and later: a new month
    assert result(shop.buy("ann"))["points"] == 11


def test_per_period_caps_also_hold_for_budgeted_awards_in_flight() -> None:
    capped = {**BUDGETED, "budget": 1000, "limits": {"per_customer_per_week": 1}}
    shop = Loyalty(program(capped))
    first = shop.buy("ann", pump=False)  # not decided yet: it already counts
    second = result(shop.buy("ann"))
    assert skipped(second) == {"launch": "per-customer limit of 1 per week reached"}
    assert result(shop.pump(first))["points"] == 30


def test_a_refused_award_gives_the_customer_count_back() -> None:
    shop = Loyalty(program({**BUDGETED, "budget": 30, "per_customer_limit": 1}))
    a, b = spread(2)
    held = shop.buy(a, pump=False)
    assert result(shop.buy(b))["points"] == 30
    assert skipped(result(shop.pump(held))) == {"launch": "budget exhausted"}
    shop.driver.apply_config(program({**BUDGETED, "budget": 60, "per_customer_limit": 1}, version=2))
    assert result(shop.buy(a))["points"] == 30  # a's refused award did not use up its limit


def test_reversal_takes_the_points_back_but_not_the_budget_spend() -> None:
    shop = Loyalty(program({**BUDGETED, "budget": 30, "limits": {"per_customer_per_day": 1}}))
    a, b = spread(2)
    res = result(shop.buy(a))
    reversed_ = result(shop.command(a, "REVERSE", res["event_id"]))
    assert reversed_["status"] == "REVERSED" and reversed_["wallet"]["points"] == 0
    assert skipped(result(shop.buy(b))) == {"launch": "budget exhausted"}  # the spend stays spent
    ledger = shop.driver.store("budgets", shop.driver.partition_for("launch"))["campaign:launch"]
    assert ledger["spent"] == 30
    shop.driver.apply_config(
        program({**BUDGETED, "budget": 60, "limits": {"per_customer_per_day": 1}}, version=2)
    )
    assert result(shop.buy(a))["points"] == 30  # the reversal gave the day's count back


def test_a_fulfilment_waits_for_its_budget_and_cannot_be_fulfilled_twice_meanwhile() -> None:
    shop = Loyalty(program(BUDGETED))
    order = result(shop.buy("ann", fulfilled=False))
    assert order["status"] == "PENDING"
    fulfil = shop.command("ann", "FULFILL", order["event_id"], pump=False)
    assert results(fulfil) == []
    again = result(shop.command("ann", "FULFILL", order["event_id"]))
    assert again["status"] == "FAILED" and "waiting for a campaign budget decision" in again["reason"]
    done = result(shop.pump(fulfil))
    assert done["kind"] == "FULFILL" and done["status"] == "RESOLVED" and done["points"] == 30
    reversed_ = result(shop.command("ann", "REVERSE", order["event_id"]))
    assert reversed_["status"] == "REVERSED" and reversed_["wallet"]["points"] == 0


def test_period_caps_are_validated() -> None:
    with pytest.raises(ValidationError, match="per_customer_per_day"):
        program({"id": "x", "limits": {"per_customer_per_day": 0}})
    with pytest.raises(ValidationError, match="per_customer_per_year"):
        program({"id": "x", "limits": {"per_customer_per_year": 1}})


def test_docs_list_the_fields_of_the_exhaustion_webhook() -> None:
    text = (Path(__file__).parents[2] / "docs" / "loyalty.md").read_text()
    section = text.split("### Budgets", 1)[1].split("\n### ", 1)[0]
    (fields,) = re.findall(r"^\| CAMPAIGN_BUDGET_EXHAUSTED \| (.+) \|$", section, re.M)
    shop = Loyalty(program({**BUDGETED, "budget": 30}))
    (note,) = hooks(shop.buy("ann"), "CAMPAIGN_BUDGET_EXHAUSTED")
    assert set(re.findall(r'"([a-z_]+)"', fields)) == set(note["data"])
