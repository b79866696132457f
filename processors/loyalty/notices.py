"""Notices before loss: POINTS_EXPIRING before points expire, TIER_DOWNGRADE_WARNING before a
reporting period ends that the customer would not requalify at (program `notices`).

Both are durable timers whose bookkeeping lives in the customer's state (`notices`), so a
notice, the mark that it was sent and the next timer commit in one transaction: each is sent
once per expiry day / per period under replays, reschedules and restarts. The timers are set
again (`arm`) at the end of every engine call that may have moved their moment.

State `notices`: `expiring` {at, day} (the armed expiry notice), `expiring_sent` (UTC days,
epoch days, already noticed and not yet past), `tier` {at, period_end} (the armed warning),
`tier_checked` (the period end already checked).
"""

from __future__ import annotations

import copy
import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from processors.loyalty import notifications as n
from processors.loyalty import profile, tiers, wallet
from processors.loyalty.output import Output
from schemas.program import Program

if TYPE_CHECKING:
    from processors.loyalty.engine import Step

DAY_MS = 86_400_000
EXPIRING, TIER_WARNING = "points_expiring", "tier_warning"  # timer payload types
# an entry the warning can explain: `profile.<metric> >= <number>` (or >)
_SIMPLE_ENTRY = re.compile(r"^\s*profile\.([a-z_]+)\s*(>=|>)\s*(-?\d+(?:\.\d+)?)\s*$")


def state_of(state: dict[str, Any]) -> dict[str, Any]:
    """The customer's `notices` bookkeeping (created empty; `tidy` drops it when empty)."""
    return state.setdefault("notices", {})


def days_left(at: int, now: int) -> int:
    return max(0, math.ceil((at - now) / DAY_MS))


# -- arming ------------------------------------------------------------------------------
def arm(state: dict[str, Any], program: Program, now: int, cid: str, out: Output) -> None:
    """Set, move or drop both notice timers to match the state and the program; writes a
    timer only when its moment changed (not on every event)."""
    if program.notices.points_expiring_days or "notices" in state:
        arm_expiring(state, program, now, cid, out)
    if program.notices.tier_downgrade_warning_days or "notices" in state:
        arm_tier_warning(state, program, cid, out)


def arm_expiring(state: dict[str, Any], program: Program, now: int, cid: str, out: Output) -> None:
    notes = state_of(state)
    today = now // DAY_MS
    notes["expiring_sent"] = [d for d in notes.get("expiring_sent", []) if d >= today]
    target = expiring_target(state, program, now)
    armed = notes.get("expiring")
    if target is None:
        if armed is not None:
            out.cancels.append(f"expiring:{cid}")
            del notes["expiring"]
    elif armed != target:
        notes["expiring"] = target
        out.timers.append((target["at"], f"expiring:{cid}", {"type": EXPIRING}))
    if not notes["expiring_sent"]:
        del notes["expiring_sent"]
    tidy(state)


def expiring_target(state: dict[str, Any], program: Program, now: int) -> dict[str, int] | None:
    """The earliest expiry day (UTC) of open points not noticed yet, and when to notice it:
    `points_expiring_days` before the first of its lines expires."""
    days = program.notices.points_expiring_days
    if not days:
        return None
    sent = set(state_of(state).get("expiring_sent", ()))
    kinds = points_rewards(program)
    first: int | None = None
    for b in state["buckets"]:
        exp = b["expiration_date"]
        if exp is None or exp <= now or b["remaining"] <= wallet.EPS:
            continue
        if b["reward_id"] in kinds and exp // DAY_MS not in sent and (first is None or exp < first):
            first = exp
    if first is None:
        return None
    return {"at": first - days * DAY_MS, "day": first // DAY_MS}


def points_rewards(program: Program) -> set[str]:
    return {r.id for r in program.rewards if r.kind == "points"} | {wallet.POINTS}


def arm_tier_warning(state: dict[str, Any], program: Program, cid: str, out: Output) -> None:
    notes = state_of(state)
    days = program.notices.tier_downgrade_warning_days
    end = state.get("tier_period_end")
    armed = notes.get("tier")
    target = None
    if days and end is not None and program.tiers.levels and notes.get("tier_checked") != end:
        target = {"at": end - days * DAY_MS, "period_end": end}
    if target is None and armed is not None:
        out.cancels.append(f"tier_warning:{cid}")
        del notes["tier"]
    elif target is not None and armed != target:
        notes["tier"] = target
        out.timers.append((target["at"], f"tier_warning:{cid}", {"type": TIER_WARNING}))
    if notes.get("tier_checked") is not None and notes["tier_checked"] != end:
        del notes["tier_checked"]  # a new period: no longer needed
    tidy(state)


def tidy(state: dict[str, Any]) -> None:
    if not state.get("notices"):
        state.pop("notices", None)


class Notices:
    """Mixin of `engine.Step`."""

    # -- firing ------------------------------------------------------------------------------
    def _fire_notice(self: Step, kind: str) -> Output:
        """A notice timer came due: send what is due now (checked again against the state and
        the program: the points may be spent, the days changed) and arm the next one."""
        notes = state_of(self.state)
        if kind == EXPIRING:
            notes.pop("expiring", None)  # this timer has fired
            while (target := expiring_target(self.state, self.program, self.now)) is not None:
                if target["at"] > self.now:
                    break
                self._notice_expiring(target["day"])
            arm_expiring(self.state, self.program, self.now, self.cid, self.out)
        else:
            armed = notes.pop("tier", None)
            end = self.state.get("tier_period_end")
            days = self.program.notices.tier_downgrade_warning_days
            due = end - days * DAY_MS if days and end is not None else None
            if armed is not None and end == armed["period_end"] and due is not None and due <= self.now:
                notes["tier_checked"] = end  # checked once per period, warned or not
                self._warn_tier(end)
            arm_tier_warning(self.state, self.program, self.cid, self.out)
        self._send_notes()
        return self.out

    def _notice_expiring(self: Step, day: int) -> None:
        """POINTS_EXPIRING for each points reward with open lines expiring on `day` (UTC)."""
        kinds = points_rewards(self.program)
        by_reward: dict[str, list[dict[str, Any]]] = {}
        for b in self.state["buckets"]:
            exp = b["expiration_date"]
            if exp is not None and exp // DAY_MS == day and exp > self.now and b["remaining"] > wallet.EPS:
                if b["reward_id"] in kinds:
                    by_reward.setdefault(b["reward_id"], []).append(b)
        state_of(self.state).setdefault("expiring_sent", []).append(day)
        if not by_reward:
            return
        balance, totals = wallet.balance(self.state), wallet.summary(self.state, self.cid)["totals"]
        for reward_id in sorted(by_reward):
            lines = by_reward[reward_id]
            first = min(b["expiration_date"] for b in lines)
            data = {
                "customer_id": self.cid,
                "reward_id": reward_id,
                "amount": sum(b["remaining"] for b in lines),
                "expiration_date": first,
                "expires_on": _iso_day(day),
                "days_left": days_left(first, self.now),
                "balance": balance.get(reward_id, 0.0),
                "totals": [t for t in totals if t["reward_id"] == reward_id],
            }
            self.notify(f"expiring:{self.cid}:{reward_id}:{day}", n.POINTS_EXPIRING, data)

    def _warn_tier(self: Step, end: int) -> None:
        """TIER_DOWNGRADE_WARNING when the period-end check, run now on a copy of the state as
        it will be then (lines expired by then; the period's metrics as they stand), would
        lower the tier."""
        old = tiers.find(self.program, self.state.get("tier"))
        if old is None:
            return
        then = copy.deepcopy(self.state)
        wallet.expire(then, end)
        prof = profile.build(then, self.cid, self.program, end, with_traits=False)
        new = tiers.qualify(self.program, profile.bindings(self.program, prof))
        if new is not None and new.level >= old.level:
            return
        metric, value, required = _requirement(old.entry, prof)
        data = {
            "customer_id": self.cid,
            "from_tier_id": old.id,
            "to_tier_id": new.id if new else None,
            "from_tier_name": old.name,
            "to_tier_name": new.name if new else None,
            "from_tier_level": old.level,
            "to_tier_level": new.level if new else None,
            "period_end": end,
            "days_left": days_left(end, self.now),
            "metric": metric,
            "value": value,
            "required": required,
        }
        self.notify(f"tier_warning:{self.cid}:{end}", n.TIER_DOWNGRADE_WARNING, data)


def _requirement(entry: str, prof: dict[str, Any]) -> tuple[str | None, float | None, float | None]:
    """For an entry `profile.<metric> >= <number>`: the metric, the value the period-end check
    will see and the number required; (None, None, None) for any other condition."""
    match = _SIMPLE_ENTRY.match(entry)
    if match is None or not isinstance(prof.get(match[1]), int | float):
        return None, None, None
    return match[1], float(prof[match[1]]), float(match[3])


def _iso_day(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, UTC).date().isoformat()
