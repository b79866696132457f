"""A customer's timers as one agenda in its state and one runtime timer (agenda.py): the
timers changelog carries one record per customer, every kind still fires when it is due, and
a state from before the agenda (its timers runtime timers of their own) moves over exactly."""

from __future__ import annotations

from processors.loyalty import agenda
from processors.loyalty.retention import SWEEP
from processors.runtime.timers import DUE
from tests.unit.test_loyalty_engine import DAY, Shop, hooks, program, results

POINTS = {"id": "POINTS", "name": "Points", "kind": "points", "expires_after_days": 30}
TIERS = {
    "reporting_period_days": 60,
    "levels": [
        {"id": "bronze", "name": "Bronze", "level": 0},
        {"id": "silver", "name": "Silver", "level": 1, "entry": "profile.points >= 100"},
    ],
}
EVERY_TIMER = program(
    rewards=[POINTS],
    tiers=TIERS,
    notices={"points_expiring_days": 7, "tier_downgrade_warning_days": 7},
    scheduled={"birthday": True, "anniversary": True, "inactivity_days": 45},
    campaigns=[
        {"id": "earn", "condition": "properties.amount > 0", "formula": "properties.amount"},
        {"id": "bday", "triggers": ["BIRTHDAY"], "formula": "500"},
        {"id": "winback", "triggers": ["INACTIVITY"], "formula": "10"},
    ],
)


def customer(shop: Shop) -> Shop:
    shop.command("ann", "REGISTER", id="reg", customer={"birthday": "1990-12-20"})
    shop.send("ann", id="p1", properties={"amount": 150})
    return shop


def runtime_timers(shop: Shop) -> list[str]:
    """The customer's runtime timers (not the partition's retention sweep)."""
    return [k for k in shop.driver.store("timers") if k.startswith(DUE) and not k.endswith(f"/{SWEEP}")]


def state(shop: Shop) -> dict:
    return shop.driver.store("customers")["ann"]


def day_by_day(shop: Shop, days: int, one_timer: bool = True) -> list:
    out = []
    for _ in range(days):
        out += shop.advance(DAY)
        assert len(runtime_timers(shop)) <= 1 or not one_timer
    return out


def test_a_customer_has_one_runtime_timer_for_all_its_timers() -> None:
    shop = customer(Shop(EVERY_TIMER))
    entries = state(shop)[agenda.AGENDA]
    assert {"inactivity:ann", "expiry:ann", "expiring:ann", "tier:ann", "birthday:ann",
            "anniversary:ann"} <= set(entries)  # fmt: skip
    (key,) = runtime_timers(shop)
    assert key.endswith("/wake:ann")
    assert int(key.split("/")[1]) == min(at for at, _ in entries.values()) == state(shop)[agenda.WAKE_AT]


def test_every_kind_fires_from_the_agenda_when_due() -> None:
    shop = customer(Shop(EVERY_TIMER))
    out = day_by_day(shop, 400)
    types = {r["type"] for r in results(out)}
    assert {"BIRTHDAY", "ANNIVERSARY", "INACTIVITY", "POINTS_EXPIRY"} <= types, types
    assert hooks(out, "POINTS_EXPIRING") and hooks(out, "TIER_DOWNGRADE_WARNING")
    (downgrade,) = hooks(out, "TIER_DOWNGRADE")  # the reporting period's end
    assert downgrade["triggered_by"] == "CRON_DOWNGRADE"
    assert runtime_timers(shop) and state(shop)[agenda.AGENDA]  # re-armed: next year's dates


def test_due_entries_fire_in_time_order_then_id() -> None:
    s = {"customer_id": "ann", agenda.AGENDA: {"b": [5, {}], "a": [5, {}], "c": [3, {}], "d": [9, {}]}}
    fired = []
    while (timer := agenda.pop_due(s, 6)) is not None:
        fired.append((timer.at, timer.id))
    assert fired == [(3, "c"), (5, "a"), (5, "b")] and list(s[agenda.AGENDA]) == ["d"]


def as_before_the_agenda(shop: Shop) -> None:
    """Rewrite the committed stores into the layout before the agenda: the customer's
    entries become runtime timers of their own, the state has no agenda."""
    task = shop.driver.tasks[0]
    s = state(shop)
    for timer_id, (at, payload) in s.pop(agenda.AGENDA).items():
        task.schedule(at, "ann", payload, timer_id)
    task.cancel(agenda.wake_id("ann"))
    del s[agenda.WAKE_AT]
    task.stores["customers"].put("ann", s)
    task.commit({})


def test_timers_from_before_the_agenda_fire_as_before_and_move_on_first_write() -> None:
    now, old = customer(Shop(EVERY_TIMER)), customer(Shop(EVERY_TIMER))
    as_before_the_agenda(old)
    assert len(runtime_timers(old)) >= 6 and agenda.AGENDA not in state(old)
    assert day_by_day(now, 20) == day_by_day(old, 20, one_timer=False)  # before the first is due
    purchase = {"id": "p2", "properties": {"amount": 5}}
    assert now.send("ann", **purchase) == old.send("ann", **purchase)
    assert len(runtime_timers(old)) == 1 and state(old)[agenda.AGENDA] == state(now)[agenda.AGENDA]
    assert day_by_day(now, 400) == day_by_day(old, 400)


def test_a_timer_from_before_the_agenda_that_fires_moves_the_rest() -> None:
    now, old = customer(Shop(EVERY_TIMER)), customer(Shop(EVERY_TIMER))
    as_before_the_agenda(old)
    assert day_by_day(now, 400) == day_by_day(old, 400, one_timer=False)
    assert len(runtime_timers(old)) == 1 and state(old)[agenda.AGENDA] == state(now)[agenda.AGENDA]
