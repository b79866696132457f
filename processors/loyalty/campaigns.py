"""Campaign kinds: one function per kind deciding what an event earns.

Each returns an `Award` (what to credit and why), a `Skip` (why not, for explainability) or None
(not concerned). Progress of punch cards and streaks lives in the customer's state under
`campaigns[campaign_id]`; budgets are decided on the campaign's partition (budgets.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from processors.loyalty.bounds import Refused
from processors.loyalty.rules import NotFinite, RuleError, compile_rule
from schemas.program import Campaign, Program

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
MONDAY_OFFSET_MS = 3 * DAY_MS  # the epoch was a Thursday


@dataclass
class Award:
    campaign_id: str
    kind: str
    reward_id: str
    amount: float
    rule: str
    formula: str
    multiplier: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)

    def explain(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "kind": self.kind,
            "condition": self.rule,
            "formula": self.formula,
            "reward_id": self.reward_id,
            "amount": self.amount,
            "multiplier": self.multiplier,
            **self.info,
        }


@dataclass
class Skip:
    campaign_id: str
    reason: str
    failed: bool = False  # a formula error, as opposed to a rule that just did not match
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Claim:
    """A global coupon to be decided on the partition of its code."""

    campaign_id: str
    code: str


Outcome = Award | Skip | Claim | None


@lru_cache(maxsize=1024)
def iso_ms(value: str | None) -> int | None:
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def rounded(amount: float, mode: str) -> float:
    fn = {"floor": math.floor, "ceil": math.ceil, "round": round}[mode]
    return float(fn(amount + 1e-9 if mode == "floor" else amount))


def progress(state: dict[str, Any], campaign_id: str) -> dict[str, Any]:
    return state.setdefault("campaigns", {}).setdefault(campaign_id, {"count": 0})


def eligible_dates(c: Campaign, event: dict[str, Any]) -> str | None:
    start, end = iso_ms(c.start), iso_ms(c.end)
    if start is not None and event["issued_at"] < start:
        return "campaign not started"
    if end is not None and event["issued_at"] >= end:
        return "campaign ended"
    return None


class Gate(NamedTuple):
    """What `eligible` reads of a campaign, taken out of it once per program version (an event
    checks every campaign its type triggers, about ten per purchase)."""

    campaign: Campaign
    start: int | None  # epoch ms of `start` / `end`
    end: int | None
    caps: tuple[tuple[str, int], ...]  # (period, cap) of the period kinds the campaign caps
    bad_dates: bool = False  # `start` or `end` is not ISO 8601: each event it reaches fails


def gate(c: Campaign) -> Gate:
    caps = tuple(
        (period, cap) for period, name in PERIOD_CAPS if (cap := getattr(c.limits, name)) is not None
    )
    try:
        return Gate(c, iso_ms(c.start), iso_ms(c.end), caps)
    except (ValueError, TypeError):  # `eligible_dates` raises it for each event checked
        return Gate(c, None, None, caps, bad_dates=True)


def eligible(g: Gate, event: dict[str, Any], state: dict[str, Any], budget: Budget) -> str | None:
    """Why the campaign cannot reward this event at all (None: it may)."""
    c = g.campaign
    if not c.enabled or event["type"] not in c.triggers:
        return "not triggered"
    issued = event["issued_at"]
    if g.bad_dates:
        eligible_dates(c, event)
    if g.start is not None and issued < g.start:
        return "campaign not started"
    if g.end is not None and issued >= g.end:
        return "campaign ended"
    if c.per_customer_limit is not None or g.caps:
        mine = state.get("campaigns", {}).get(c.id, {})
        if c.per_customer_limit is not None and mine.get("count", 0) >= c.per_customer_limit:
            return f"per-customer limit of {c.per_customer_limit} reached"
        periods = mine.get("periods", {})
        for period, cap in g.caps:
            if periods.get(period, {}).get(str(period_index(issued, period)), 0) >= cap:
                return f"per-customer limit of {cap} per {period} reached"
    if c.budget is not None and budget.exhausted(c):
        return BUDGET_EXHAUSTED
    return None


BUDGET_EXHAUSTED = "budget exhausted"
# per-customer caps per calendar period: (period, CampaignLimits field)
PERIOD_CAPS = (
    ("day", "per_customer_per_day"),
    ("week", "per_customer_per_week"),
    ("month", "per_customer_per_month"),
)
KEPT_PERIODS = 2  # counts kept per period kind: the current one and the one before (late events)


def period_index(ms: int, period: str) -> int:
    """The UTC day, ISO week (Monday) or month an instant falls in, as a number."""
    if period == "month":
        dt = datetime.fromtimestamp(ms / 1000, UTC)
        return dt.year * 12 + dt.month - 1
    return period_of(ms, period)


def period_capped(c: Campaign, event: dict[str, Any], state: dict[str, Any]) -> str | None:
    """The per-period cap this customer reached for the event's period, if any."""
    periods = state.get("campaigns", {}).get(c.id, {}).get("periods", {})
    for period, name in PERIOD_CAPS:
        cap = getattr(c.limits, name)
        if cap is None:
            continue
        seen = periods.get(period, {}).get(str(period_index(event["issued_at"], period)), 0)
        if seen >= cap:
            return f"per-customer limit of {cap} per {period} reached"
    return None


def counted(
    state: dict[str, Any], program: Program, campaign_id: str, event: dict[str, Any], sign: int
) -> None:
    """Count one reward of the campaign for this customer (sign -1: take one back, as a
    reversal does): in total (`per_customer_limit`) and in the event's period of each capped
    period kind (`limits`). Only the periods the campaign caps are counted."""
    p = progress(state, campaign_id)
    p["count"] = p.get("count", 0) + sign
    c = by_id(program).get(campaign_id)
    kinds = [k for k, name in PERIOD_CAPS if c is not None and getattr(c.limits, name) is not None]
    for kind in kinds if sign > 0 else list(p.get("periods", {})):
        counts = p.setdefault("periods", {}).setdefault(kind, {})
        key = str(period_index(event["issued_at"], kind))
        counts[key] = counts.get(key, 0) + sign
        if counts[key] <= 0:
            counts.pop(key)
        for old in sorted(counts, key=int)[:-KEPT_PERIODS]:
            counts.pop(old)


class Budget:
    """What a customer's partition knows of campaign budgets. Spends are granted exactly on
    the campaign's own partition (processors/loyalty/budgets.py, through campaigns.budgets);
    here only the budgets that partition said were exhausted, each with the budget it ran out
    at (a raised budget is asked again). `load(key)` reads the processor's `budgets` store."""

    def __init__(self, load: Callable[[str], Any] | None = None) -> None:
        self.load = load
        self.learned: dict[str, float] = {}  # campaign id -> budget seen exhausted (to store)

    def exhausted(self, c: Campaign) -> bool:
        if c.budget is None:
            return False
        known = self.learned.get(c.id)
        if known is None and self.load is not None:
            known = self.load(exhausted_key(c.id))
        return known is not None and known >= c.budget

    def learn(self, campaign_id: str, budget: float) -> None:
        self.learned[campaign_id] = budget


def exhausted_key(campaign_id: str) -> str:
    return f"exhausted:{campaign_id}"


def formula_award(c: Campaign, activation: Any, info: dict[str, Any] | None = None) -> Award | Skip:
    try:
        amount = compile_rule(c.formula).amount(activation)
    except NotFinite as exc:
        raise Refused(f"points_not_finite: campaign {c.id}: {exc}") from None
    except RuleError as exc:
        return Skip(c.id, f"formula failed: {exc}", failed=True)
    return Award(c.id, c.kind, c.reward_id, amount, c.condition, c.formula, info=info or {})


def matches(c: Campaign, activation: Any) -> bool:
    return compile_rule(c.condition).test(activation)


def behavior(c: Campaign, event: dict[str, Any], state: dict[str, Any], activation: Any) -> Outcome:
    if not matches(c, activation):
        return Skip(c.id, "condition not met")
    return formula_award(c, activation)


def punch_card(c: Campaign, event: dict[str, Any], state: dict[str, Any], activation: Any) -> Outcome:
    if not matches(c, activation):
        return Skip(c.id, "condition not met")
    p = progress(state, c.id)
    needed = c.punch_card.punches if c.punch_card else 1
    p["punches"] = p.get("punches", 0) + 1
    if p["punches"] < needed:
        return Skip(c.id, "punch recorded", info={"punches": p["punches"], "of": needed})
    p["punches"] = 0  # the card restarts after completion
    return formula_award(c, activation, {"punches": needed, "of": needed})


def period_of(ms: int, period: str) -> int:
    return ms // DAY_MS if period == "day" else (ms + MONDAY_OFFSET_MS) // WEEK_MS


def streak(c: Campaign, event: dict[str, Any], state: dict[str, Any], activation: Any) -> Outcome:
    if not matches(c, activation):
        return Skip(c.id, "condition not met")
    spec = c.streak
    period, length = (spec.period, spec.length) if spec else ("day", 2)
    p = progress(state, c.id)
    current = period_of(event["issued_at"], period)
    last = p.get("last_period")
    if last == current:
        return Skip(c.id, "period already counted", info={"streak": p.get("streak", 0)})
    p["streak"] = p.get("streak", 0) + 1 if last == current - 1 else 1
    p["last_period"] = current
    if p["streak"] < length:
        return Skip(c.id, "streak extended", info={"streak": p["streak"], "of": length})
    p["streak"] = 0
    return formula_award(c, activation, {"streak": length, "period": period})


def coupon(c: Campaign, event: dict[str, Any], state: dict[str, Any], activation: Any) -> Outcome:
    code = event.get("coupon_code")
    if not code or not c.coupon or code not in c.coupon.codes:
        return None
    if not matches(c, activation):
        return Skip(c.id, "condition not met")
    if c.coupon.single_use == "global":
        return Claim(c.id, code)
    used = progress(state, c.id).setdefault("codes", [])
    if code in used:
        return Skip(c.id, f"coupon {code} already used by this customer")
    award = formula_award(c, activation, {"code": code})
    if isinstance(award, Award):
        used.append(code)
    return award


KINDS = {"behavior": behavior, "punch_card": punch_card, "streak": streak, "coupon": coupon}


_INDEX: dict[int, tuple[Program, dict[str, list[Gate]], dict[str, Campaign]]] = {}


def _index(program: Program) -> tuple[dict[str, list[Gate]], dict[str, Campaign]]:
    """Per program version: the enabled campaigns of each trigger type (program order, as
    `Gate`s), and campaigns by id, so an event looks only at the campaigns it can trigger."""
    cached = _INDEX.get(id(program))
    if cached is None or cached[0] is not program:
        if len(_INDEX) > 16:
            _INDEX.clear()
        by_trigger: dict[str, list[Gate]] = {}
        by_id: dict[str, Campaign] = {}
        for c in program.campaigns:
            by_id.setdefault(c.id, c)  # the first one wins, as a linear search would
            if c.kind in KINDS and c.enabled:
                g = gate(c)
                for t in dict.fromkeys(c.triggers):
                    by_trigger.setdefault(t, []).append(g)
        cached = _INDEX[id(program)] = (program, by_trigger, by_id)
    return cached[1], cached[2]


def by_id(program: Program) -> dict[str, Campaign]:
    return _index(program)[1]


def evaluate(
    program: Program, event: dict[str, Any], state: dict[str, Any], activation: Any, budget: Budget
) -> list[Outcome]:
    """Every campaign the event triggers, in program order (several may reward one event)."""
    out: list[Outcome] = []
    for g in _index(program)[0].get(event["type"], ()):
        c = g.campaign
        why = eligible(g, event, state, budget)
        if why:
            out.append(Skip(c.id, why))
            continue
        out.append(KINDS[c.kind](c, event, state, activation))
    return out
