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

from typing import Any

from processors.loyalty import wallet
from processors.loyalty.output import Output
from schemas.program import Program

DAY_MS = 86_400_000
EXPIRING, TIER_WARNING = "points_expiring", "tier_warning"  # timer payload types


def state_of(state: dict[str, Any]) -> dict[str, Any]:
    """The customer's `notices` bookkeeping (created empty; `tidy` drops it when empty)."""
    return state.setdefault("notices", {})


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
    for reward_id in kinds.intersection(wallet.rewards(state)):
        for b in wallet.ordered(state, reward_id):  # soonest first: the first match is its earliest
            exp = b["expiration_date"]
            if exp is None or (first is not None and exp >= first):
                break
            if exp > now and b["remaining"] > wallet.EPS and exp // DAY_MS not in sent:
                first = exp
                break
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
