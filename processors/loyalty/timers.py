"""Timers of a customer: reservation expiry, points expiry, tier reporting periods, the
notices before loss (POINTS_EXPIRING, TIER_DOWNGRADE_WARNING; arming is in notices.py), and
the scheduled internal events BIRTHDAY, ANNIVERSARY and INACTIVITY that campaigns can reward
(`scheduled_event`: engine.fire applies it as an event)."""

from __future__ import annotations

import copy
import math
import re
from datetime import UTC, datetime
from typing import Any

from processors.loyalty import dates, profile, reservations, tiering, tiers, wallet
from processors.loyalty import notifications as n
from processors.loyalty.core import DAY_MS, Step
from processors.loyalty.dates import SCHEDULED_TYPES
from processors.loyalty.envelope import command, uid
from processors.loyalty.notices import (
    EXPIRING,
    TIER_WARNING,
    arm_expiring,
    arm_tier_warning,
    expiring_target,
    points_rewards,
    state_of,
)
from processors.loyalty.output import Output

# an entry the warning can explain: `profile.<metric> >= <number>` (or >)
SIMPLE_ENTRY = re.compile(r"^\s*profile\.([a-z_]+)\s*(>=|>)\s*(-?\d+(?:\.\d+)?)\s*$")


def fire(step: Step, payload: dict[str, Any]) -> Output:
    kind = payload.get("type")
    if kind == "reservation":
        return reservations.release(step, None, payload["event_id"], "EXPIRED")
    if kind == "expiry":
        step.state.pop("expiry_timer_at", None)
        lines = step.expire()
        if lines:
            ev = command("EXPIRE", step.cid, "POINTS_EXPIRY", step.now)
            step.result(ev, "RESOLVED", expirations=lines)
        return step.finish()
    if kind == "tier_period":
        return _period_end(step)
    if kind in (EXPIRING, TIER_WARNING):
        return _fire_notice(step, kind)
    return step.out


def _period_end(step: Step) -> Output:
    """The closing period's metrics decide the tier for the next one (a gold tier on
    `period_purchases >= 50` is kept by 50 purchases in the period), then they restart."""
    tiering.downgrade(step, "CRON_DOWNGRADE", None, None)
    m = profile.metrics(step.state)
    m.update(period_purchases=0, period_spend=0.0, period_points=0.0)
    step.final = None  # the profile the check built still counts the closing period
    if not step.program.tiers.levels:  # tiers were removed: stop the period timer
        step.state.pop("tier_period_end", None)
        return step.finish()
    end = step.now + step.program.tiers.reporting_period_days * DAY_MS
    step.state["tier_period_end"] = end
    step.out.timers.append((end, f"tier:{step.cid}", {"type": "tier_period"}))
    return step.finish()


def scheduled_event(step: Step, kind: str) -> dict[str, Any] | None:
    """The SCHEDULED event a birthday, anniversary or inactivity timer produces (applied as an
    event by events.py), or None when there is none (inactivity: active since it was set)."""
    if kind == "inactivity":
        step.state.pop("inactivity_at", None)
        days = step.program.scheduled.inactivity_days
        last = profile.metrics(step.state)["last_event_at"]
        if not days or last is None:
            return None
        due = last + days * DAY_MS
        if due > step.now:  # active since the timer was set: wait again
            step.state["inactivity_at"] = due
            step.out.timers.append((due, f"inactivity:{step.cid}", {"type": "inactivity"}))
            return None
    type_ = SCHEDULED_TYPES[kind]
    return command("SCHEDULED", step.cid, type_, step.now, id=uid(step.cid, type_, step.now))


def after_scheduled(step: Step, kind: str) -> None:
    """After the scheduled event: the next birthday or anniversary (inactivity is measured
    afresh by the event itself)."""
    if kind != "inactivity":
        dates.schedule_dates(step)


def rearm(step: Step, type_: str) -> None:
    """What firing a scheduled event's timer does to the state, without the event
    (it was refused): the next birthday/anniversary, or inactivity measured afresh."""
    if type_ == SCHEDULED_TYPES["inactivity"]:
        step.state.pop("inactivity_at", None)
    else:
        dates.schedule_dates(step)


def _fire_notice(step: Step, kind: str) -> Output:
    """A notice timer came due: send what is due now (checked again against the state and
    the program: the points may be spent, the days changed) and arm the next one."""
    notes = state_of(step.state)
    if kind == EXPIRING:
        notes.pop("expiring", None)  # this timer has fired
        while (target := expiring_target(step.state, step.program, step.now)) is not None:
            if target["at"] > step.now:
                break
            _notice_expiring(step, target["day"])
        arm_expiring(step.state, step.program, step.now, step.cid, step.out)
    else:
        armed = notes.pop("tier", None)
        end = step.state.get("tier_period_end")
        days = step.program.notices.tier_downgrade_warning_days
        due = end - days * DAY_MS if days and end is not None else None
        if armed is not None and end == armed["period_end"] and due is not None and due <= step.now:
            notes["tier_checked"] = end  # checked once per period, warned or not
            _warn_tier(step, end)
        arm_tier_warning(step.state, step.program, step.cid, step.out)
    step.send_notes()
    return step.out


def _notice_expiring(step: Step, day: int) -> None:
    """POINTS_EXPIRING for each points reward with open lines expiring on `day` (UTC)."""
    kinds = points_rewards(step.program)
    by_reward: dict[str, list[dict[str, Any]]] = {}
    for reward_id in kinds.intersection(wallet.rewards(step.state)):
        for b in wallet.ordered(step.state, reward_id):  # soonest first: stop after the day
            exp = b["expiration_date"]
            if exp is None or exp // DAY_MS > day:
                break
            if exp // DAY_MS == day and exp > step.now and b["remaining"] > wallet.EPS:
                by_reward.setdefault(reward_id, []).append(b)
    state_of(step.state).setdefault("expiring_sent", []).append(day)
    if not by_reward:
        return
    balance, totals = wallet.balance(step.state), wallet.summary(step.state, step.cid)["totals"]
    for reward_id in sorted(by_reward):
        lines = by_reward[reward_id]
        first = min(b["expiration_date"] for b in lines)
        data = {
            "customer_id": step.cid,
            "reward_id": reward_id,
            "amount": sum(b["remaining"] for b in lines),
            "expiration_date": first,
            "expires_on": iso_day(day),
            "days_left": days_left(first, step.now),
            "balance": balance.get(reward_id, 0.0),
            "totals": [t for t in totals if t["reward_id"] == reward_id],
        }
        step.notify(f"expiring:{step.cid}:{reward_id}:{day}", n.POINTS_EXPIRING, data)


def _warn_tier(step: Step, end: int) -> None:
    """TIER_DOWNGRADE_WARNING when the period-end check, run now on a copy of the state as
    it will be then (lines expired by then; the period's metrics as they stand), would
    lower the tier."""
    old = tiers.find(step.program, step.state.get("tier"))
    if old is None:
        return
    then = copy.deepcopy(step.state)
    wallet.expire(then, end)
    prof = profile.build(then, step.cid, step.program, end, with_traits=False)
    new = tiers.qualify(step.program, profile.bindings(step.program, prof))
    if new is not None and new.level >= old.level:
        return
    metric, value, required = requirement(old.entry, prof)
    data = {
        "customer_id": step.cid,
        "from_tier_id": old.id,
        "to_tier_id": new.id if new else None,
        "from_tier_name": old.name,
        "to_tier_name": new.name if new else None,
        "from_tier_level": old.level,
        "to_tier_level": new.level if new else None,
        "period_end": end,
        "days_left": days_left(end, step.now),
        "metric": metric,
        "value": value,
        "required": required,
    }
    step.notify(f"tier_warning:{step.cid}:{end}", n.TIER_DOWNGRADE_WARNING, data)


def days_left(at: int, now: int) -> int:
    return max(0, math.ceil((at - now) / DAY_MS))


def requirement(entry: str, prof: dict[str, Any]) -> tuple[str | None, float | None, float | None]:
    """For an entry `profile.<metric> >= <number>`: the metric, the value the period-end check
    will see and the number required; (None, None, None) for any other condition."""
    match = SIMPLE_ENTRY.match(entry)
    if match is None or not isinstance(prof.get(match[1]), int | float):
        return None, None, None
    return match[1], float(prof[match[1]]), float(match[3])


def iso_day(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, UTC).date().isoformat()
