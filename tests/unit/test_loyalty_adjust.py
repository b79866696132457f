"""Direct points (ADJUST command) through the in-memory TestDriver: the ledger line with its
reason, the webhook, the tier, the balance check, bounds and idempotency."""

from __future__ import annotations

from typing import Any

from tests.unit.test_loyalty_engine import BASE, TIERS, Shop, hook_types, hooks, profile, program, result

REWARDS = [{"id": "POINTS", "name": "Points", "expires_after_days": 10}, {"id": "COFFEE", "kind": "other"}]


def adjust(shop: Shop, who: str, amount: Any, id: str = "adj-1", **payload: Any) -> list:
    payload = {"amount": amount, "reward_id": "POINTS", "reason": "goodwill", **payload}
    return shop.send(who, "ADJUSTMENT", id=id, kind="ADJUST", payload=payload)


def test_a_credit_is_an_adjustment_line_with_its_reason_and_an_accumulation_webhook():
    shop = Shop(program(rewards=REWARDS))
    out = adjust(shop, "ann", 250, reason="late delivery")
    res = result(out)
    assert (res["status"], res["kind"], res["event_id"], res["points"]) == (
        "RESOLVED",
        "ADJUST",
        "adj-1",
        250,
    )
    (line,) = res["detail"]["accumulations"]
    assert line["kind"] == "ADJUSTMENT" and line["amount"] == 250 and line["reason"] == "late delivery"
    assert (
        line["id"] == "adj-1:ADJUSTMENT:0"
        and line["expiration_date"] == res["processed_at"] + 10 * 86_400_000
    )
    (hook,) = hooks(out, "CUSTOMER_ACCUMULATION")
    assert set(hook) == {"customer_id", "lines", "wallet"} and hook["lines"] == [line]
    assert hook["wallet"]["points"] == 250 and hook["wallet"]["lifetime"] == 250
    prof = profile(out)
    assert prof["lifetime_points"] == 250 and prof["event_count"] == 0  # not a behaviour event


def test_a_debit_takes_from_the_balance_oldest_expiring_first_with_a_redemption_webhook():
    shop = Shop(program(campaigns=[{**BASE, "formula": "100"}], rewards=REWARDS))
    shop.send("ann", properties={"amount": 1})
    shop.send("ann", properties={"amount": 1})
    out = adjust(shop, "ann", -150, reason="fraud")
    res = result(out)
    assert res["status"] == "RESOLVED" and res["reason"] == "fraud"
    lines = res["detail"]["redemptions"]
    assert [ln["amount"] for ln in lines] == [-100, -50]  # signed: the change to the balance
    assert all(
        ln["kind"] == "ADJUSTMENT" and ln["reason"] == "fraud" and ln["source_line_id"] for ln in lines
    )
    (hook,) = hooks(out, "CUSTOMER_REDEMPTION")
    assert hook["lines"] == lines and hook["wallet"]["points"] == 50 and hook["wallet"]["lifetime"] == 50
    assert "CUSTOMER_ACCUMULATION" not in hook_types(out)


def test_a_debit_beyond_the_balance_fails_and_changes_nothing():
    shop = Shop(program(rewards=REWARDS))
    adjust(shop, "ann", 40, id="a")
    res = result(adjust(shop, "ann", -50, id="b"))
    assert (
        res["status"] == "FAILED" and res["reason"] == "insufficient balance: 50 POINTS asked, 40 available"
    )
    assert res["wallet"]["points"] == 40 and res["detail"]["redemptions"] == []


def test_the_same_adjustment_twice_is_applied_once():
    shop = Shop(program(rewards=REWARDS))
    first = result(adjust(shop, "ann", 70))
    again = result(adjust(shop, "ann", 70))
    assert again["detail"]["duplicate"] and again["wallet"]["points"] == 70
    assert first["wallet"] == again["wallet"]


def test_tiers_are_re_evaluated_after_a_credit_and_a_debit():
    shop = Shop(program(rewards=REWARDS, tiers=TIERS))
    out = adjust(shop, "ann", 100, id="up")
    (up,) = hooks(out, "TIER_UPGRADE")
    assert (up["to_tier_id"], up["triggered_by"], up["trigger_event_type"]) == (
        "silver",
        "EVENT",
        "ADJUSTMENT",
    )
    out = adjust(shop, "ann", -60, id="down")
    (down,) = hooks(out, "TIER_DOWNGRADE")
    assert (down["from_tier_id"], down["to_tier_id"]) == ("silver", "bronze")
    assert (down["triggered_by"], down["trigger_event_id"]) == ("ADJUSTMENT", "down")


def test_other_rewards_and_invalid_payloads():
    shop = Shop(program(rewards=REWARDS))
    res = result(adjust(shop, "ann", 2, id="c", reward_id="COFFEE"))
    assert res["wallet"]["balance"] == {"COFFEE": 2} and res["points"] == 0
    for i, (amount, extra, why) in enumerate(
        [
            (0, {}, "amount_out_of_range"),
            (2e12, {}, "amount_out_of_range"),
            ("5", {}, "invalid adjustment: amount"),
            (5, {"reward_id": "NOPE"}, "reward 'NOPE' is not defined"),
            (5, {"reason": " "}, "a reason is required"),
        ]
    ):
        res = result(adjust(shop, "ann", amount, id=f"bad-{i}", **extra))
        assert res["status"] == "FAILED" and why in res["reason"], res["reason"]


def test_a_credit_over_the_balance_bound_fails():
    shop = Shop(program(rewards=REWARDS))
    adjust(shop, "ann", 1e12, id="big")
    customers = shop.driver.tasks[0].stores["customers"]
    customers.put("ann", {**customers.get("ann"), "lifetime": 1e15})  # 1000 such credits later
    res = result(adjust(shop, "ann", 1, id="over"))
    assert res["status"] == "FAILED" and res["reason"].startswith("balance_out_of_range")


def test_an_adjustment_cannot_be_reversed():
    shop = Shop(program(rewards=REWARDS))
    adjust(shop, "ann", 10)
    res = result(shop.command("ann", "REVERSE", "adj-1"))
    assert res["status"] == "FAILED" and "opposite adjustment" in res["reason"]
