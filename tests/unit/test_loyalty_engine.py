"""The loyalty processor through the in-memory TestDriver: what results, webhooks and profiles
a user sees for every rule, campaign kind, tier path and event lifecycle."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from processors.delivery.routing import request_body
from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.testing import TestDriver
from schemas.program import Program

DAY = 86_400_000
NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z
REKEYED = ("events.loyalty", "loyalty.referrals", "coupons.claims", "campaigns.budgets")


def program(**fields: Any) -> Program:
    fields.setdefault("version", 1)
    fields.setdefault("event_types", [{"name": "APP_OPEN"}])  # undefined types are REJECTED
    return Program.model_validate(fields)


BASE = {
    "id": "base",
    "condition": "properties.amount > 0",
    "formula": "properties.amount * 1 + (properties.amount > 100 ? 50 : 0)",
}


class Shop:
    """A driver plus helpers to send events the way ingest would."""

    def __init__(self, prog: Program, partitions: int = 1) -> None:
        self.driver = TestDriver(LoyaltyProcessor(partitions=partitions), prog, now=NOW)
        self.partitions = partitions

    def send(self, customer: str, type_: str = "PURCHASE", pump: bool = True, **fields) -> list:
        now = self.driver.clock.now_ms()
        props = fields.pop("properties", {})
        event = {
            "id": fields.pop("id", None) or str(uuid.uuid4()),
            "customer_id": customer,
            "type": type_,
            "issued_at": fields.pop("issued_at", now),
            "received_at": now,
            "properties": orjson.dumps(props).decode(),
            **{k: orjson.dumps(v).decode() if k == "payload" else v for k, v in fields.items()},
        }
        out = self.driver.send("events.loyalty", customer, event)
        return self.pump(out) if pump else out

    def command(self, who: str, kind: str, target: str | None = None, **payload) -> list:
        type_ = "REGISTRATION" if kind == "REGISTER" else "COMMAND"
        return self.send(who, type_, kind=kind, target_event_id=target, payload=payload)

    def pump(self, out: list) -> list:
        """Feed re-keyed commands back in, as Kafka would, until none is left."""
        everything = list(out)
        queue = [r for r in out if r[0] in REKEYED]
        while queue:
            topic, key, value = queue.pop(0)
            more = self.driver.send(topic, key, value)
            everything += more
            queue += [r for r in more if r[0] in REKEYED]
        return everything

    def advance(self, ms: int) -> list:
        return self.pump(self.driver.advance(ms))


def results(out: list) -> list[dict]:
    return [{**v, "detail": orjson.loads(v["detail"])} for t, _, v in out if t == "loyalty.results"]


def result(out: list) -> dict:
    (res,) = results(out)
    return res


def hooks(out: list, event: str | None = None) -> list[dict]:
    """The webhook `data` of each notification (of one type), as delivery POSTs it."""
    return [
        orjson.loads(request_body(v))["data"]
        for t, _, v in out
        if t == "notifications" and (event is None or v["event"] == event)
    ]


def hook_types(out: list) -> list[str]:
    return [v["event"] for t, _, v in out if t == "notifications"]


def profile(out: list) -> dict:
    return [orjson.loads(v["profile"]) for t, _, v in out if t == "profiles.changes"][-1]


def points(out: list) -> float:
    return result(out)["wallet"]["points"]


# -- behavior campaigns, results, webhooks, idempotency ---------------------------------------


def test_purchase_earns_by_formula_and_explains_why():
    shop = Shop(program(campaigns=[BASE]))
    out = shop.send("ann", properties={"amount": 150})
    res = result(out)
    assert res["status"] == "RESOLVED" and res["points"] == 200 and res["config_version"] == 1
    (rule,) = res["detail"]["rules_applied"]
    assert rule["campaign_id"] == "base" and rule["amount"] == 200
    (line,) = res["detail"]["accumulations"]
    assert line["campaign_id"] == "base" and line["rule"] == "properties.amount > 0"
    assert line["kind"] == "ACCUMULATION" and res["detail"]["event"]["properties"] == {"amount": 150}
    (hook,) = hooks(out, "CUSTOMER_ACCUMULATION")
    assert set(hook) == {"customer_id", "lines", "wallet"}
    assert hook["wallet"]["points"] == 200 and hook["wallet"]["lifetime"] == 200
    assert set(hook["wallet"]) == {
        "customer_id",
        "balance",
        "points",
        "lifetime",
        "pending",
        "reserved",
        "totals",
        "lines",
        "sequence",
    }
    assert profile(out)["purchase_count"] == 1 and profile(out)["total_spend"] == 150


def test_several_campaigns_reward_one_event_and_a_missing_property_is_no_match():
    electronics = {
        "id": "elec",
        "condition": 'properties.category == "electronics"',
        "formula": "10",
    }
    shop = Shop(program(campaigns=[BASE, electronics]))
    assert points(shop.send("ann", properties={"amount": 10, "category": "electronics"})) == 20
    res = result(shop.send("bob", properties={"amount": 10}))
    assert [r["campaign_id"] for r in res["detail"]["rules_applied"]] == ["base"]
    assert res["points"] == 10


def test_a_failing_formula_fails_that_campaign_only():
    broken = {"id": "broken", "condition": "true", "formula": "properties.missing * 2"}
    shop = Shop(program(campaigns=[broken, BASE]))
    res = result(shop.send("ann", properties={"amount": 10}))
    assert res["status"] == "RESOLVED" and res["points"] == 10
    (skip,) = [s for s in res["detail"]["rules_skipped"] if s["campaign_id"] == "broken"]
    assert skip["failed"] and "missing field 'missing'" in skip["reason"]


def test_a_repeated_event_id_returns_the_first_result_and_adds_nothing():
    shop = Shop(program(campaigns=[BASE]))
    first = result(shop.send("ann", id="evt-1", properties={"amount": 50}, reply_to="a"))
    again = shop.send("ann", id="evt-1", properties={"amount": 999}, reply_to="b")
    res = result(again)
    assert res["detail"]["duplicate"] and res["reply_to"] == "b"
    assert res["points"] == first["points"] == 50 and hooks(again) == []
    assert points(shop.send("ann", properties={"amount": 1})) == 51


def test_new_program_version_is_used_without_restart():
    shop = Shop(program(campaigns=[BASE]))
    shop.send("ann", properties={"amount": 10})
    shop.driver.apply_config(program(version=2, campaigns=[{**BASE, "formula": "5"}]))
    res = result(shop.send("ann", properties={"amount": 10}))
    assert res["config_version"] == 2 and res["points"] == 5


def test_dates_per_customer_limit_and_budget():
    campaigns = [
        {**BASE, "id": "once", "formula": "1", "per_customer_limit": 1},
        {**BASE, "id": "future", "formula": "1000", "start": "2030-01-01T00:00:00Z"},
        {**BASE, "id": "past", "formula": "1000", "end": "2020-01-01"},
        {**BASE, "id": "budget", "formula": "60", "budget": 100},
    ]
    shop = Shop(program(campaigns=campaigns))
    assert points(shop.send("ann", properties={"amount": 1})) == 61
    res = result(shop.send("ann", properties={"amount": 1}))
    assert res["points"] == 40  # only what is left of the budget; limit reached
    reasons = {s["campaign_id"]: s["reason"] for s in res["detail"]["rules_skipped"]}
    assert reasons == {
        "once": "per-customer limit of 1 reached",
        "future": "campaign not started",
        "past": "campaign ended",
    }
    skipped = result(shop.send("bob", properties={"amount": 1}))["detail"]["rules_skipped"]
    assert {"campaign_id": "budget", "reason": "budget exhausted", "failed": False} in skipped


def test_rewards_other_than_points_and_rounding():
    prog = program(
        rewards=[{"id": "POINTS"}, {"id": "COFFEE", "kind": "other"}],
        campaigns=[
            {**BASE, "formula": "properties.amount / 3"},
            {**BASE, "id": "c", "formula": "1", "reward_id": "COFFEE"},
        ],
    )
    res = result(Shop(prog).send("ann", properties={"amount": 10}))
    assert res["wallet"]["balance"] == {"POINTS": 3.0, "COFFEE": 1.0}


# -- tiers ----------------------------------------------------------------------------------

TIERS = {
    "reporting_period_days": 30,
    "levels": [
        {"id": "bronze", "name": "Bronze", "level": 0},
        {
            "id": "silver",
            "name": "Silver",
            "level": 1,
            "entry": "profile.lifetime_points >= 100",
            "multiplier": 2,
        },
        {
            "id": "gold",
            "name": "Gold",
            "level": 2,
            "entry": "profile.period_purchases >= 3",
            "multiplier": 3,
        },
    ],
}


def test_upgrade_on_the_event_then_multiplier_applies():
    shop = Shop(program(campaigns=[BASE], tiers=TIERS))
    out = shop.send("ann", id="big", properties={"amount": 100})
    (up,) = hooks(out, "TIER_UPGRADE")
    assert (up["from_tier_id"], up["from_tier_name"], up["from_tier_level"]) == ("bronze", "Bronze", 0)
    assert (up["to_tier_id"], up["to_tier_name"], up["to_tier_level"]) == ("silver", "Silver", 1)
    assert (up["triggered_by"], up["trigger_event_id"], up["trigger_event_type"]) == (
        "EVENT",
        "big",
        "PURCHASE",
    )
    assert result(out)["detail"]["tier"]["id"] == "silver"
    res = result(shop.send("ann", properties={"amount": 10}))
    assert res["points"] == 20 and res["detail"]["rules_applied"][0]["multiplier"] == 2


def test_downgrade_at_the_end_of_the_reporting_period():
    shop = Shop(program(campaigns=[{**BASE, "formula": "1"}], tiers=TIERS))
    for _ in range(3):
        out = shop.send("ann", properties={"amount": 1})
    assert profile(out)["tier"] == "gold"
    out = shop.advance(31 * DAY)  # qualified in the closing period: gold is kept for the next
    assert hooks(out, "TIER_DOWNGRADE") == [] and profile(out)["tier"] == "gold"
    assert profile(out)["period_purchases"] == 0  # the new period starts from nothing
    out = shop.advance(30 * DAY)  # no purchase in that one: down at its end
    (down,) = hooks(out, "TIER_DOWNGRADE")
    assert (down["from_tier_id"], down["to_tier_id"]) == ("gold", "bronze")
    assert down["triggered_by"] == "CRON_DOWNGRADE"
    assert (down["trigger_event_id"], down["trigger_event_type"]) == (None, None)


def test_reversal_takes_back_points_metrics_and_tier():
    shop = Shop(program(campaigns=[BASE], tiers=TIERS))
    shop.send("ann", id="big", properties={"amount": 100})
    out = shop.command("ann", "REVERSE", "big", reason="returned")
    res = result(out)
    assert res["event_id"] == "big" and res["status"] == "REVERSED" and res["reason"] == "returned"
    assert res["wallet"]["points"] == 0 and res["wallet"]["lifetime"] == 0
    (down,) = hooks(out, "TIER_DOWNGRADE")
    assert down["triggered_by"] == "REVERSAL" and down["trigger_event_id"] == "big"
    assert profile(out)["purchase_count"] == 0 and profile(out)["total_spend"] == 0
    again = result(shop.command("ann", "REVERSE", "big"))
    assert again["status"] == "FAILED" and "REVERSED" in again["reason"]


# -- redemptions, reservations, fulfil, cancel, expiry --------------------------------------


def test_redemption_and_failure_when_balance_is_short():
    shop = Shop(program(campaigns=[{**BASE, "formula": "100"}]))
    shop.send("ann", properties={"amount": 1})
    out = shop.send("ann", properties={"amount": 1}, redeem=[{"reward_id": "POINTS", "amount": 30}])
    (hook,) = hooks(out, "CUSTOMER_REDEMPTION")
    assert hook["lines"][0]["amount"] == 30 and hook["wallet"]["points"] == 170  # after the event
    out = shop.send("ann", properties={"amount": 1}, redeem=[{"reward_id": "POINTS", "amount": 500}])
    res = result(out)
    assert res["status"] == "FAILED" and "insufficient balance" in res["reason"]
    assert res["wallet"]["points"] == 170 and res["points"] == 0
    (failed,) = hooks(out, "BEHAVIOR_EVENT_FAILED")
    assert failed["event"]["id"] == res["event_id"] and set(failed) == {"event", "customer_id"}


def reserved_shop() -> tuple[Shop, str]:
    shop = Shop(program(campaigns=[{**BASE, "formula": "100"}]))
    shop.send("ann", properties={"amount": 1})
    out = shop.send(
        "ann",
        id="order",
        fulfilled=False,
        properties={"amount": 1},
        redeem=[{"reward_id": "POINTS", "amount": 40}],
    )
    res = result(out)
    assert res["status"] == "PENDING" and res["points"] == 0
    assert res["wallet"]["pending"] == 40 and res["wallet"]["points"] == 60
    (hook,) = hooks(out, "REWARDS_RESERVATION")
    assert hook["lines"][0]["kind"] == "RESERVATION"
    return shop, "order"


def test_fulfil_redeems_and_accumulates():
    shop, order = reserved_shop()
    out = shop.command("ann", "FULFILL", order)
    res = result(out)
    assert res["event_id"] == order and res["status"] == "RESOLVED" and res["points"] == 100
    assert res["wallet"]["points"] == 160 and res["wallet"]["pending"] == 0
    assert hook_types(out) == [
        "CUSTOMER_REDEMPTION",
        "CUSTOMER_ACCUMULATION",
        "BEHAVIOR_EVENT_FULFILLED",
    ]
    assert hooks(shop.advance(2 * DAY), "REWARDS_RESERVATION_CANCELLED") == []


def test_cancel_releases_the_reserved_lines():
    shop, order = reserved_shop()
    out = shop.command("ann", "CANCEL", order, reason="changed mind")
    res = result(out)
    assert (res["status"], res["reason"]) == ("CANCELLED", "changed mind")
    (hook,) = hooks(out, "REWARDS_RESERVATION_CANCELLED")
    assert hook["lines"][0]["amount"] == 40 and hook["wallet"]["points"] == 100
    assert result(shop.command("ann", "FULFILL", order))["status"] == "FAILED"


def test_reservation_expires_after_24h_by_timer():
    shop, order = reserved_shop()
    assert shop.advance(23 * 3600_000) == []
    out = shop.advance(3600_000)
    assert result(out)["status"] == "EXPIRED"
    (hook,) = hooks(out, "REWARDS_RESERVATION_CANCELLED")
    assert hook["wallet"]["points"] == 100 and hook["wallet"]["pending"] == 0


def test_points_expire_after_n_days():
    prog = program(rewards=[{"id": "POINTS", "expires_after_days": 10}], campaigns=[BASE])
    shop = Shop(prog)
    line = result(shop.send("ann", properties={"amount": 10}))["detail"]["accumulations"][0]
    assert line["expiration_date"] == NOW + 10 * DAY
    out = shop.advance(10 * DAY)
    res = result(out)
    assert res["type"] == "POINTS_EXPIRY" and res["detail"]["expirations"][0]["amount"] == 10
    assert res["wallet"]["points"] == 0 and profile(out)["lifetime_points"] == 10


# -- consent, anonymous, registration -------------------------------------------------------


def test_consent_withdrawn_rejects_events_with_a_reason():
    shop = Shop(program(campaigns=[BASE]))
    shop.command("ann", "CONSENT", purposes={"behavioral_campaigns": False})
    res = result(shop.send("ann", properties={"amount": 10}))
    assert res["status"] == "REJECTED" and "behavioral_campaigns" in res["reason"] and res["points"] == 0
    shop.command("ann", "CONSENT", purposes={"behavioral_campaigns": True})
    assert result(shop.send("ann", properties={"amount": 10}))["points"] == 10


def test_registration_anonymous_and_identify():
    shop = Shop(
        program(campaigns=[{**BASE, "triggers": ["REGISTRATION"], "condition": "true", "formula": "25"}])
    )
    out = shop.command("ann", "REGISTER", anonymous=True, customer={"name": "Ann"})
    (hook,) = hooks(out, "CUSTOMER_REGISTRATION")
    assert hook["customer"] == {"name": "Ann"} and hook["wallet"]["points"] == 25
    assert profile(out)["anonymous"] is True and result(out)["points"] == 25
    out = shop.command("ann", "IDENTIFY")
    assert profile(out)["anonymous"] is False and profile(out)["identified"] is True
    migrated = shop.command("bob", "REGISTER", migrated=True, customer={})
    assert hooks(migrated, "CUSTOMER_REGISTRATION") == []


# -- punch card and streak ------------------------------------------------------------------


def test_punch_card_rewards_every_nth_event_and_restarts():
    card = {"id": "card", "kind": "punch_card", "formula": "50", "punch_card": {"punches": 3}}
    shop = Shop(program(campaigns=[card]))
    earned = [result(shop.send("ann"))["points"] for _ in range(7)]
    assert earned == [0, 0, 50, 0, 0, 50, 0]


def test_streak_rewards_consecutive_days_and_a_gap_resets():
    streak = {
        "id": "daily",
        "kind": "streak",
        "triggers": ["APP_OPEN"],
        "formula": "30",
        "streak": {"period": "day", "length": 3},
    }
    shop = Shop(program(campaigns=[streak]))

    def open_app(day: int) -> float:
        return result(shop.send("ann", "APP_OPEN", issued_at=NOW + day * DAY))["points"]

    assert [open_app(d) for d in (0, 0, 1, 3, 4, 5)] == [0, 0, 0, 0, 0, 30]


# -- referral and coupons (re-keyed through code-keyed topics) ------------------------------


def test_referral_rewards_the_code_owner_on_another_partition():
    referral = {
        "id": "ref",
        "kind": "referral",
        "triggers": ["REGISTRATION"],
        "referral": {"referrer_points": 100, "referee_points": 20},
    }
    shop = Shop(program(campaigns=[referral]), partitions=3)
    shop.command("ann", "REGISTER", customer={"referral_code": "ANN-1"})
    out = shop.send("bob", "REGISTRATION", kind="REGISTER", referral_code="ANN-1", payload={})
    by_customer = {r["customer_id"]: r for r in results(out) if r["type"] == "REFERRAL"}
    assert by_customer["ann"]["points"] == 100 and by_customer["bob"]["points"] == 20
    assert by_customer["ann"]["detail"]["rules_applied"][0]["referee"] == "bob"
    again = shop.send("bob", "REGISTRATION", kind="REGISTER", referral_code="ANN-1", payload={})
    assert [r for r in results(again) if r["type"] == "REFERRAL"] == []
    unknown = shop.send("cy", "REGISTRATION", kind="REGISTER", referral_code="NOPE", payload={})
    assert [r for r in results(unknown) if r["type"] == "REFERRAL"] == []


def coupon(single_use: str) -> dict:
    return {
        "id": "cpn",
        "kind": "coupon",
        "triggers": ["PURCHASE"],
        "formula": "75",
        "coupon": {"codes": ["SAVE75"], "single_use": single_use},
    }


def test_per_customer_coupon_rewards_each_customer_once():
    shop = Shop(program(campaigns=[coupon("per_customer")]))
    out = shop.send("ann", coupon_code="SAVE75")
    assert result(out)["points"] == 75
    (hook,) = hooks(out, "COUPON_REDEMPTION")
    assert hook == {
        "customer_id": "ann",
        "campaign_id": "cpn",
        "code": "SAVE75",
    }
    assert result(shop.send("ann", coupon_code="SAVE75"))["points"] == 0
    assert result(shop.send("bob", coupon_code="SAVE75"))["points"] == 75


def test_global_coupon_is_claimed_once_across_partitions():
    shop = Shop(program(campaigns=[coupon("global")]), partitions=3)
    out = shop.send("ann", coupon_code="SAVE75")
    granted = [r for r in results(out) if r["kind"] == "COUPON_GRANTED"]
    assert len(granted) == 1 and granted[0]["points"] == 75 and hooks(out, "COUPON_REDEMPTION")
    out = shop.send("bob", coupon_code="SAVE75")
    (rejected,) = [r for r in results(out) if r["kind"] == "COUPON_REJECTED"]
    assert rejected["status"] == "REJECTED" and "already used" in rejected["reason"]


# -- scheduled events, profile, RFM, traits -------------------------------------------------


def test_birthday_and_inactivity_are_internal_events_campaigns_reward():
    prog = program(
        scheduled={"birthday": True, "inactivity_days": 30},
        campaigns=[
            {"id": "bday", "triggers": ["BIRTHDAY"], "formula": "500"},
            {"id": "winback", "triggers": ["INACTIVITY"], "formula": "10"},
        ],
    )
    shop = Shop(prog)
    shop.command("ann", "REGISTER", customer={"birthday": "1990-11-20"})
    out = shop.advance(6 * DAY)
    res = result(out)
    assert (res["type"], res["kind"], res["points"]) == ("BIRTHDAY", "SCHEDULED", 500)
    out = shop.advance(25 * DAY)
    assert result(out)["type"] == "INACTIVITY" and result(out)["points"] == 10


def test_profile_has_rfm_and_traits():
    prog = program(
        campaigns=[BASE],
        traits=[{"name": "big_spender", "expression": "profile.total_spend > 500"}],
    )
    shop = Shop(prog)
    for _ in range(5):
        out = shop.send("ann", properties={"amount": 200}, tags=["web"])
    p = profile(out)
    assert p["rfm"]["recency"] == 5 and p["rfm"]["frequency"] == 3 and p["rfm"]["monetary"] == 5
    assert p["traits"] == {"big_spender": True} and p["events_by_type"] == {"PURCHASE": 5}


@pytest.mark.parametrize("amount,expected", [(150, 200), (100, 100), (0, 0)])
def test_formula_table(amount, expected):
    assert (
        result(Shop(program(campaigns=[BASE])).send("x", properties={"amount": amount}))["points"] == expected
    )


def test_inactivity_counts_from_the_last_event():
    prog = program(
        scheduled={"inactivity_days": 30},
        campaigns=[{"id": "winback", "triggers": ["INACTIVITY"], "formula": "10"}],
    )
    shop = Shop(prog)
    shop.send("ann", "APP_OPEN")
    shop.advance(20 * DAY)
    shop.send("ann", "APP_OPEN")
    assert results(shop.advance(10 * DAY)) == []
    res = result(shop.advance(20 * DAY))
    assert (res["type"], res["points"]) == ("INACTIVITY", 10)


def test_example_program_rules_compile_and_reward_a_purchase():
    from pathlib import Path

    from processors.loyalty.rules import validate
    from schemas.program import load_program

    prog = load_program(Path(__file__).parents[2] / "examples" / "program.yaml")
    assert len(prog.campaigns) >= 10
    sources = [s for c in prog.campaigns for s in (c.condition, c.formula)]
    sources += [t.entry for t in prog.tiers.levels] + [t.expression for t in prog.traits]
    assert [validate(s) for s in sources] == [None] * len(sources)
    out = Shop(prog.model_copy(update={"version": 1})).send(
        "ann", properties={"amount": 150, "category": "electronics"}
    )
    applied = {r["campaign_id"] for r in result(out)["detail"]["rules_applied"]}
    assert applied == {"purchase-points", "electronics-bonus", "first-purchase"}
    assert result(out)["points"] == 200 + 75 + 100
    assert set(profile(out)["traits"]) == {"big_spender", "loyal", "app_user"}


def test_reversal_restores_redeemed_points():
    shop = Shop(program(campaigns=[{**BASE, "formula": "100"}]))
    shop.send("ann", properties={"amount": 1})
    redeem = [{"reward_id": "POINTS", "amount": 60}]
    shop.send("ann", id="order", properties={"amount": 1}, redeem=redeem)
    res = result(shop.command("ann", "REVERSE", "order"))
    assert res["detail"]["restored"][0]["amount"] == 60
    assert res["wallet"]["points"] == 100 and res["wallet"]["lifetime"] == 100


def test_reversing_a_fulfilled_purchase_takes_back_what_the_fulfilment_applied():
    shop, order = reserved_shop()
    shop.command("ann", "FULFILL", order)
    res = result(shop.command("ann", "REVERSE", order))
    assert res["status"] == "REVERSED"
    assert [line["amount"] for line in res["detail"]["reversals"]] == [-100]
    assert res["detail"]["restored"][0]["amount"] == 40
    assert res["wallet"]["points"] == 100 and res["wallet"]["pending"] == 0


def test_an_event_record_keeps_the_first_result_once_and_still_reverses():
    shop = Shop(program(campaigns=[{**BASE, "formula": "100"}]))
    shop.send("ann", id="order", properties={"amount": 1})
    record = shop.driver.store("events")["order"]
    assert set(record) == {"result", "status", "since"}  # the event and its lines live in the result
    legacy = {
        **record,
        "event": {
            "id": "order",
            "customer_id": "ann",
            "type": "PURCHASE",
            "issued_at": NOW,
            "properties": '{"amount": 1}',
        },
        "accumulations": [],
        "redemptions": [],
    }
    shop.driver.tasks[0].stores["events"].put("order", legacy)  # a record written by an older version
    res = result(shop.command("ann", "REVERSE", "order"))
    assert res["status"] == "REVERSED" and res["detail"]["reversals"] == []  # its stored lines win


def test_a_repeated_command_is_applied_once():
    shop, order = reserved_shop()
    fulfil = shop.send("ann", "COMMAND", id="cmd-1", kind="FULFILL", target_event_id=order)
    again = shop.send("ann", "COMMAND", id="cmd-1", kind="FULFILL", target_event_id=order)
    assert result(again)["detail"]["duplicate"] and result(again)["points"] == 100
    assert result(fulfil)["wallet"] == result(again)["wallet"]


def test_anniversary_of_registration():
    prog = program(
        scheduled={"anniversary": True},
        campaigns=[{"id": "anni", "triggers": ["ANNIVERSARY"], "formula": "250"}],
    )
    shop = Shop(prog)
    shop.command("ann", "REGISTER", customer={})
    assert results(shop.advance(364 * DAY)) == []
    res = result(shop.advance(2 * DAY))
    assert (res["type"], res["points"]) == ("ANNIVERSARY", 250)


def test_an_internal_error_fails_the_event_not_the_processor(monkeypatch):
    from processors.loyalty import engine

    shop = Shop(program(campaigns=[BASE]))

    def boom(*args, **kwargs):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(engine, "apply", boom)
    res = result(shop.send("ann", properties={"amount": 10}))
    assert res["status"] == "FAILED" and "ZeroDivisionError" in res["reason"]
    monkeypatch.undo()
    assert points(shop.send("ann", properties={"amount": 10})) == 10


def test_metrics_count_results_and_rewards():
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = sample("loyalty_rewards_issued_total", reward_id="POINTS")
    resolved = sample("loyalty_results_total", status="RESOLVED")
    Shop(program(campaigns=[BASE])).send("ann", properties={"amount": 150})
    assert sample("loyalty_rewards_issued_total", reward_id="POINTS") == before + 200
    assert sample("loyalty_results_total", status="RESOLVED") == resolved + 1
