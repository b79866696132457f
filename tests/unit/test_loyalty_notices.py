"""Notices before loss through the TestDriver and its manual clock: POINTS_EXPIRING once per
expiry day, `points_expiring_days` before, and TIER_DOWNGRADE_WARNING before a reporting period
ends that the customer would not requalify at; neither sent twice under a repeated event or a
restart from the stores, and their payloads as docs/loyalty.md lists them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pydantic
import pytest

from deploy.cli import load_program
from processors.delivery.routing import webhook_targets
from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.task import PartitionTask
from tests.unit.test_loyalty_engine import DAY, NOW, Shop, hooks, program, result
from tests.unit.test_loyalty_webhooks import conforms

HOUR = 3_600_000
POINTS_30 = {"id": "POINTS", "name": "Points", "kind": "points", "expires_after_days": 30}
BONUS_10 = {"id": "BONUS", "name": "Bonus points", "kind": "points", "expires_after_days": 10}
EARN = {"id": "earn", "condition": "properties.amount > 0", "formula": "properties.amount"}
APP_BONUS = {"id": "app", "triggers": ["APP_OPEN"], "formula": "5", "reward_id": "BONUS"}
EXPIRING = program(rewards=[POINTS_30, BONUS_10], campaigns=[EARN, APP_BONUS],
                   notices={"points_expiring_days": 7})  # fmt: skip
TIERS = {
    "reporting_period_days": 30,
    "levels": [
        {"id": "bronze", "name": "Bronze", "level": 0},
        {"id": "silver", "name": "Silver", "level": 1, "entry": "profile.points >= 100"},
    ],
}
WARNING = program(campaigns=[EARN], tiers=TIERS, notices={"tier_downgrade_warning_days": 7})

EXPIRING_DATA = {
    "customer_id": str,
    "reward_id": str,
    "amount": float,
    "expiration_date": int,
    "expires_on": str,
    "days_left": int,
    "balance": float,
    "totals": [{"total": float, "reward_id": str, "expiration_date": (int, type(None))}],
}
WARNING_DATA = {
    "customer_id": str,
    "from_tier_id": str,
    "to_tier_id": str,
    "from_tier_name": str,
    "to_tier_name": str,
    "from_tier_level": int,
    "to_tier_level": int,
    "period_end": int,
    "days_left": int,
    "metric": str,
    "value": float,
    "required": float,
}


def buy(shop: Shop, customer: str, amount: float, **fields: Any) -> list:
    return shop.send(customer, properties={"amount": amount}, **fields)


def until(shop: Shop, at: int) -> list:
    """Move the clock to `at` (epoch ms), firing what came due on the way."""
    return shop.advance(at - shop.driver.clock.now_ms())


def timer_ids(shop: Shop) -> list[str]:
    """The customers' timers (their agendas) and the runtime's."""
    agendas = [i for state in shop.driver.store("customers").values() for i in state.get("agenda", {})]
    return [*agendas, *shop.driver.store("timers")]


def restarted(shop: Shop) -> Shop:
    """The processor started again on the same committed stores and timers (a new instance
    restoring them from the changelogs), at the same moment."""
    old = shop.driver
    new = Shop(old.program)
    new.driver.clock.set(old.clock.now_ms())
    new.driver.tasks = {
        p: PartitionTask(
            new.driver.processor,
            p,
            {name: s.backend for name, s in task.stores.items()},
            new.driver._emit,
            new.driver.clock.now_ms,
            lambda: new.driver.program,
            pending=new.driver.pending,
        )
        for p, task in old.tasks.items()
    }
    assert isinstance(new.driver.processor, LoyaltyProcessor)
    return new


# -- POINTS_EXPIRING ------------------------------------------------------------------------------


def test_points_expiring_is_sent_once_n_days_before_the_earliest_expiry() -> None:
    shop = Shop(EXPIRING)
    buy(shop, "ann", 100)
    shop.advance(HOUR)
    buy(shop, "ann", 20)  # the same expiry day: the same notice
    expiry = NOW + 30 * DAY
    assert hooks(until(shop, expiry - 7 * DAY - 1), "POINTS_EXPIRING") == []
    (notice,) = hooks(shop.advance(1), "POINTS_EXPIRING")
    conforms(notice, EXPIRING_DATA, "POINTS_EXPIRING")
    assert notice["amount"] == 120 and notice["expiration_date"] == expiry and notice["days_left"] == 7
    assert (notice["reward_id"], notice["balance"], notice["expires_on"]) == ("POINTS", 120, "2023-12-14")
    assert notice["totals"] == [  # the wallet's next expirations of this reward
        {"total": 100.0, "reward_id": "POINTS", "expiration_date": expiry},
        {"total": 20.0, "reward_id": "POINTS", "expiration_date": expiry + HOUR},
    ]
    later = until(shop, expiry + DAY)  # the points expire; nothing more is noticed
    assert hooks(later, "POINTS_EXPIRING") == []
    assert result(later)["type"] == "POINTS_EXPIRY"


def test_each_expiry_day_is_noticed_once_in_date_order() -> None:
    shop = Shop(EXPIRING)
    buy(shop, "ann", 100)
    shop.advance(2 * DAY)
    buy(shop, "ann", 30)
    notices = [hooks(until(shop, NOW + d * DAY), "POINTS_EXPIRING") for d in range(23, 40)]
    sent = [(d, h["amount"]) for d, hs in zip(range(23, 40), notices, strict=True) for h in hs]
    assert sent == [(23, 100), (25, 30)]


def test_not_sent_again_for_a_repeated_event_or_after_a_restart() -> None:
    shop = Shop(EXPIRING)
    buy(shop, "ann", 100, id="order-1")
    shop = restarted(shop)  # the timer is durable: it fires after a restart
    (notice,) = hooks(until(shop, NOW + 23 * DAY), "POINTS_EXPIRING")
    assert notice["amount"] == 100
    again = buy(shop, "ann", 100, id="order-1")  # a redelivered event: its first result
    assert result(again)["detail"]["duplicate"] is True
    shop = restarted(shop)
    buy(shop, "ann", 5)  # a new event arms the notices again: the day stays noticed
    assert hooks(until(shop, NOW + 29 * DAY), "POINTS_EXPIRING") == []


def test_an_earlier_expiring_accrual_moves_the_notice_earlier() -> None:
    shop = Shop(EXPIRING)
    buy(shop, "ann", 100)  # POINTS, expiring in 30 days: noticed on day 23
    shop.advance(DAY)
    shop.send("ann", "APP_OPEN")  # 5 BONUS expiring in 10 days (day 11): noticed on day 4
    assert hooks(until(shop, NOW + 4 * DAY - 1), "POINTS_EXPIRING") == []
    (bonus,) = hooks(shop.advance(1), "POINTS_EXPIRING")
    assert (bonus["reward_id"], bonus["amount"], bonus["expiration_date"]) == ("BONUS", 5, NOW + 11 * DAY)
    (points,) = hooks(until(shop, NOW + 23 * DAY), "POINTS_EXPIRING")
    assert (points["reward_id"], points["amount"]) == ("POINTS", 100)


def test_not_sent_when_the_points_were_spent_before_and_partial_spends_count() -> None:
    shop = Shop(EXPIRING)
    buy(shop, "ann", 100)
    buy(shop, "bob", 100)
    shop.advance(5 * DAY)
    redeem = [{"reward_id": "POINTS", "amount": 100}]
    buy(shop, "ann", 0, redeem=redeem)  # all of ann's points
    buy(shop, "bob", 0, redeem=[{"reward_id": "POINTS", "amount": 40}])
    sent = hooks(until(shop, NOW + 23 * DAY), "POINTS_EXPIRING")
    assert [(h["customer_id"], h["amount"]) for h in sent] == [("bob", 60)]
    assert hooks(until(shop, NOW + 40 * DAY), "POINTS_EXPIRING") == []


def test_a_notice_due_after_the_points_expired_is_not_sent() -> None:
    shop = Shop(EXPIRING)
    buy(shop, "ann", 100)
    out = until(shop, NOW + 31 * DAY)  # the processor was down from before day 23 to day 31
    assert hooks(out, "POINTS_EXPIRING") == []
    assert result(out)["type"] == "POINTS_EXPIRY"


def test_an_armed_notice_follows_a_change_of_the_days() -> None:
    shop = Shop(EXPIRING)
    buy(shop, "ann", 100)  # armed for day 23
    shop.driver.apply_config(program(version=2, rewards=[POINTS_30, BONUS_10], campaigns=[EARN],
                                     notices={"points_expiring_days": 3}))  # fmt: skip
    assert hooks(until(shop, NOW + 27 * DAY - 1), "POINTS_EXPIRING") == []  # fired, re-armed
    (notice,) = hooks(shop.advance(1), "POINTS_EXPIRING")
    assert notice["days_left"] == 3


def test_off_by_default_no_notice_and_no_timer() -> None:
    shop = Shop(program(rewards=[POINTS_30], campaigns=[EARN], tiers=TIERS))
    buy(shop, "ann", 150)
    assert not [k for k in timer_ids(shop) if "expiring:" in k or "tier_warning:" in k]
    out = until(shop, NOW + 40 * DAY)
    assert hooks(out, "POINTS_EXPIRING") == hooks(out, "TIER_DOWNGRADE_WARNING") == []


def test_turning_the_notice_off_drops_its_timer() -> None:
    shop = Shop(EXPIRING)
    buy(shop, "ann", 100)
    assert "expiring:ann" in timer_ids(shop)
    shop.driver.apply_config(program(version=2, rewards=[POINTS_30, BONUS_10], campaigns=[EARN]))
    buy(shop, "ann", 1)  # the customer's next call applies the new program
    assert not [k for k in timer_ids(shop) if "expiring:" in k]
    assert hooks(until(shop, NOW + 40 * DAY), "POINTS_EXPIRING") == []


# -- TIER_DOWNGRADE_WARNING -----------------------------------------------------------------------


def test_warning_for_a_customer_who_would_not_requalify_and_not_for_one_who_would() -> None:
    shop = Shop(WARNING)
    buy(shop, "ann", 150)  # silver, keeps 150 points: requalifies
    buy(shop, "bob", 150)  # silver, then spends 100: 50 points at the period end
    buy(shop, "bob", 0, redeem=[{"reward_id": "POINTS", "amount": 100}])
    period_end = NOW + 30 * DAY
    assert hooks(until(shop, period_end - 7 * DAY - 1), "TIER_DOWNGRADE_WARNING") == []
    (warning,) = hooks(shop.advance(1), "TIER_DOWNGRADE_WARNING")
    conforms(warning, WARNING_DATA, "TIER_DOWNGRADE_WARNING")
    assert warning["customer_id"] == "bob"
    assert (warning["from_tier_id"], warning["to_tier_id"]) == ("silver", "bronze")
    assert (warning["to_tier_name"], warning["to_tier_level"]) == ("Bronze", 0)
    assert (warning["period_end"], warning["days_left"]) == (period_end, 7)
    assert (warning["metric"], warning["value"], warning["required"]) == ("points", 50, 100)
    buy(shop, "bob", 10)  # later events in the period do not warn again
    end = until(shop, period_end)
    assert hooks(end, "TIER_DOWNGRADE_WARNING") == []
    (down,) = hooks(end, "TIER_DOWNGRADE")  # the warning was right
    assert (down["customer_id"], down["triggered_by"]) == ("bob", "CRON_DOWNGRADE")


def test_the_warning_counts_points_that_expire_before_the_period_ends() -> None:
    prog = program(rewards=[{**POINTS_30, "expires_after_days": 20}], campaigns=[EARN], tiers=TIERS,
                   notices={"tier_downgrade_warning_days": 14})  # fmt: skip
    shop = Shop(prog)
    buy(shop, "ann", 150)  # expire on day 20, before the period ends on day 30
    (warning,) = hooks(until(shop, NOW + 16 * DAY), "TIER_DOWNGRADE_WARNING")
    assert (warning["value"], warning["days_left"]) == (0, 14)


def test_warned_once_per_period_also_after_a_restart() -> None:
    shop = Shop(WARNING)
    buy(shop, "bob", 150)
    buy(shop, "bob", 0, redeem=[{"reward_id": "POINTS", "amount": 100}])
    (warning,) = hooks(until(shop, NOW + 23 * DAY), "TIER_DOWNGRADE_WARNING")
    shop = restarted(shop)
    buy(shop, "bob", 1)
    assert hooks(until(shop, NOW + 29 * DAY), "TIER_DOWNGRADE_WARNING") == []
    buy(shop, "bob", 100)  # still silver at the end: 151 points
    assert hooks(until(shop, NOW + 30 * DAY), "TIER_DOWNGRADE") == []
    buy(shop, "bob", 0, redeem=[{"reward_id": "POINTS", "amount": 100}])
    (second,) = hooks(until(shop, NOW + 53 * DAY), "TIER_DOWNGRADE_WARNING")  # the next period
    assert second["period_end"] == NOW + 60 * DAY != warning["period_end"]


def test_warning_days_must_be_shorter_than_the_period() -> None:
    with pytest.raises(pydantic.ValidationError, match="notices.tier_downgrade_warning_days"):
        program(tiers=TIERS, notices={"tier_downgrade_warning_days": 30})
    with pytest.raises(pydantic.ValidationError, match="points_expiring_days"):
        program(notices={"points_expiring_days": 0})


# -- docs -------------------------------------------------------------------------------------------


def test_docs_loyalty_md_lists_the_fields_sent() -> None:
    text = (Path(__file__).parents[2] / "docs" / "loyalty.md").read_text()
    section = text.split("## Notices before loss", 1)[1].split("\n## ", 1)[0]
    documented = {
        kind: set(re.findall(r'"([a-z_]+)"', fields))
        for kind, fields in re.findall(r"^\| `?([A-Z_]+)`? \| (.+) \|$", section, re.M)
    }
    assert documented == {"POINTS_EXPIRING": set(EXPIRING_DATA), "TIER_DOWNGRADE_WARNING": set(WARNING_DATA)}


def test_the_example_program_sends_both_to_its_webhook() -> None:
    example = load_program(Path(__file__).parents[2] / "examples" / "program.yaml",
                           env={"RECEIVER_URL": "http://127.0.0.1:9"})  # fmt: skip
    assert example.notices.points_expiring_days and example.notices.tier_downgrade_warning_days
    for event in ("POINTS_EXPIRING", "TIER_DOWNGRADE_WARNING"):
        note = {"id": "n", "event": event, "customer_id": "ann", "data": "{}"}
        assert [e.id for e in webhook_targets(example, note)] == ["demo"]
