"""Amounts that overflow a double must fail the event, never reach the wallet as inf (which
JSON turns into null, so the wallet showed 0): events straight from Kafka, absurd formulas,
awards and balances over the documented bounds."""

from __future__ import annotations

import math

import pytest

from processors.loyalty.bounds import MAX_AMOUNT, MAX_BALANCE
from tests.unit.test_loyalty_engine import BASE, DAY, Shop, hook_types, hooks, profile, program, result

ECHO = {**BASE, "formula": "properties.amount"}  # points = the amount


def finite_wallet(wallet: dict) -> bool:
    numbers = [wallet["points"], wallet["lifetime"], wallet["pending"], *wallet["balance"].values()]
    return all(isinstance(x, float) and math.isfinite(x) for x in numbers)


def test_purchases_of_1e308_and_1_7e308_fail_and_leave_the_wallet_as_it_was():
    shop = Shop(program(campaigns=[BASE]))
    shop.send("ann", properties={"amount": 10})
    for amount in (1e308, 1.7e308):
        out = shop.send("ann", properties={"amount": amount})
        res = result(out)
        assert res["status"] == "FAILED" and res["reason"].startswith("amount_out_of_range")
        assert res["points"] == 0 and hook_types(out) == ["BEHAVIOR_EVENT_FAILED"]
        wallet = res["wallet"]
        assert (wallet["points"], wallet["lifetime"], wallet["balance"]) == (10, 10, {"POINTS": 10})
        assert profile(out)["total_spend"] == 10 and profile(out)["purchase_count"] == 1
    assert shop.driver.store("customers")["ann"]["lifetime"] == 10
    assert result(shop.send("ann", properties={"amount": 10}))["wallet"]["points"] == 20


@pytest.mark.parametrize(
    "formula,amount,reason",
    [
        ("properties.amount * 1e300 * 1e300", 2, "points_not_finite"),  # inf
        ("properties.amount * 1e6", 1e7, "points_out_of_range"),  # 1e13 in one award
    ],
)
def test_an_absurd_award_fails_the_whole_event_and_applies_nothing(formula, amount, reason):
    card = {"id": "card", "kind": "punch_card", "formula": "1", "punch_card": {"punches": 5}}
    absurd = {"id": "x", "condition": "properties.amount > 1", "formula": formula}
    shop = Shop(program(campaigns=[{**BASE, "formula": "5"}, card, absurd]))
    shop.send("ann", properties={"amount": 1})
    out = shop.send("ann", properties={"amount": amount}, redeem=[{"reward_id": "POINTS", "amount": 2}])
    res = result(out)
    assert res["status"] == "FAILED" and res["reason"].startswith(reason), res["reason"]
    assert hook_types(out) == ["BEHAVIOR_EVENT_FAILED"]
    assert res["wallet"]["points"] == 5 and finite_wallet(res["wallet"])
    state = shop.driver.store("customers")["ann"]
    assert state["metrics"]["purchase_count"] == 1 and state["campaigns"]["card"]["punches"] == 1
    assert shop.driver.store("events")[res["event_id"]]["status"] == "FAILED"
    assert result(shop.send("ann", properties={"amount": 1}))["wallet"]["points"] == 10


def test_a_balance_over_the_bound_fails_the_event():
    shop = Shop(program(campaigns=[ECHO]))
    shop.send("ann", properties={"amount": MAX_AMOUNT})
    store = shop.driver.tasks[0].stores["customers"]
    state = store.get("ann")
    state["lifetime"] = MAX_BALANCE - 1  # as if after a thousand top awards
    store.put("ann", state)
    res = result(shop.send("ann", properties={"amount": 2}))
    assert res["status"] == "FAILED" and res["reason"].startswith("balance_out_of_range")
    assert result(shop.send("ann", properties={"amount": 1}))["status"] == "RESOLVED"


def test_a_tier_multiplier_cannot_push_an_award_past_the_bound():
    tiers = {"levels": [{"id": "vip", "name": "VIP", "level": 0, "multiplier": 1e6}]}
    shop = Shop(program(campaigns=[{**ECHO, "tier_multipliers": True}], tiers=tiers))
    res = result(shop.send("ann", properties={"amount": 1e10}))
    assert res["status"] == "FAILED" and res["reason"].startswith("points_out_of_range")


def test_a_redemption_out_of_range_fails_with_the_reason():
    shop = Shop(program(campaigns=[ECHO]))
    shop.send("ann", properties={"amount": 10})
    for amount in (math.nan, 1e13):
        res = result(shop.send("ann", redeem=[{"reward_id": "POINTS", "amount": amount}]))
        assert res["status"] == "FAILED" and res["reason"].startswith("amount_out_of_range")
        assert res["wallet"]["points"] == 10


def test_a_refused_fulfilment_leaves_the_reservation_open():
    big = {**BASE, "id": "big", "condition": "properties.amount == 3", "formula": "1e300 * 1e300"}
    shop = Shop(program(campaigns=[{**BASE, "formula": "50"}, big]))
    shop.send("ann", properties={"amount": 1})
    redeem = [{"reward_id": "POINTS", "amount": 20}]
    shop.send("ann", id="order", fulfilled=False, properties={"amount": 3}, redeem=redeem)
    out = shop.command("ann", "FULFILL", "order")
    res = result(out)
    assert res["status"] == "FAILED" and res["reason"].startswith("points_not_finite")
    assert hooks(out) == [] and shop.driver.store("events")["order"]["status"] == "PENDING"
    assert res["wallet"]["pending"] == 20 and res["wallet"]["points"] == 30
    assert result(shop.advance(2 * DAY))["status"] == "EXPIRED"  # its timer still runs


def test_a_refused_scheduled_event_keeps_the_yearly_timer():
    prog = program(
        scheduled={"birthday": True},
        campaigns=[{"id": "bday", "triggers": ["BIRTHDAY"], "formula": "1e300 * 1e300"}],
    )
    shop = Shop(prog)
    shop.command("ann", "REGISTER", customer={"birthday": "1990-11-20"})
    res = result(shop.advance(6 * DAY))
    assert (res["type"], res["status"]) == ("BIRTHDAY", "FAILED") and "points_not_finite" in res["reason"]
    assert result(shop.advance(366 * DAY))["type"] == "BIRTHDAY"  # next year's fires
