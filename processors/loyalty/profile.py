"""The customer profile: behaviour metrics, RFM scores and computed traits.

The profile is FLAT (see the profiles.changes contract) so audience and tier CEL reads it
verbatim (`profile.purchase_count > 0`). Time-relative fields are left to consumers.
"""

from __future__ import annotations

import bisect
from typing import Any

from processors.loyalty import reactions, wallet
from processors.loyalty.rules import Bindings, Fields, RuleError, compile_rule, fields_of, reduce
from schemas.program import Program, Rfm

DAY_MS = 86_400_000
# the consent record's fields beside the purposes (Masivo's consent object): kept in the state's
# `consent_record` with `vendors` and shown in the profile's, once a consent PATCH set one
CONSENT_RECORD = ("consent_string", "version", "consent_timestamp")


def metrics(state: dict[str, Any]) -> dict[str, Any]:
    return state.setdefault(
        "metrics",
        {
            "purchase_count": 0,
            "total_spend": 0.0,
            "last_purchase_at": None,
            "events_by_type": {},
            "event_count": 0,
            "last_event_at": None,
            "first_seen": None,
            "period_purchases": 0,
            "period_spend": 0.0,
            "period_points": 0.0,
        },
    )


def amount_of(event: dict[str, Any], properties: dict[str, Any]) -> float:
    value = properties.get("amount", 0)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def record(state: dict[str, Any], event: dict[str, Any], properties: dict[str, Any], sign: int = 1) -> dict:
    """Count an event (sign=-1 takes it back on reversal); returns the delta applied."""
    m = metrics(state)
    at = event["issued_at"]
    by_type = m["events_by_type"]
    by_type[event["type"]] = by_type.get(event["type"], 0) + sign
    m["event_count"] += sign
    if sign > 0:
        m["last_event_at"] = max(m["last_event_at"] or at, at)
        m["first_seen"] = min(m["first_seen"] or at, at)
    if event["type"] == "PURCHASE":
        spend = amount_of(event, properties)
        m["purchase_count"] += sign
        m["total_spend"] += sign * spend
        m["period_purchases"] += sign
        m["period_spend"] += sign * spend
        if sign > 0:
            m["last_purchase_at"] = max(m["last_purchase_at"] or at, at)
    return m


def score(value: float | None, bounds: list[float], lower_is_better: bool = False) -> int:
    """1..5 from ascending bounds; recency (days) scores high when low."""
    if value is None:
        return 1
    if lower_is_better:
        return 5 - bisect.bisect_left(bounds, value) if bounds else 1
    return 1 + bisect.bisect_right(bounds, value)


def rfm(m: dict[str, Any], cfg: Rfm, now: int) -> dict[str, Any]:
    last = m["last_purchase_at"]
    days = None if last is None else max(0.0, (now - last) / DAY_MS)
    r = score(days, cfg.recency_days, lower_is_better=True)
    f = score(m["purchase_count"], cfg.frequency)
    mo = score(m["total_spend"], cfg.monetary)
    return {"recency": r, "frequency": f, "monetary": mo, "score": r + f + mo, "recency_days": days}


def build(
    state: dict[str, Any],
    customer_id: str,
    program: Program,
    now: int,
    with_traits: bool = True,
    only: Fields | None = None,
) -> dict[str, Any]:
    """The flat profile JSON of profiles.changes (traits computed last, over the rest).
    `only`: just these fields (see `reduce`), as campaign rules need; the costly ones (RFM,
    balance) are then computed only when wanted."""

    def wanted(name: str) -> bool:
        return only is None or with_traits or name in only

    m = metrics(state)
    customer = state.get("customer", {})
    profile = {
        "customer_id": customer_id,
        "anonymous": state.get("anonymous", False),
        "identified": not state.get("anonymous", False),
        "consent": state.get("consent", {}),
        "tier": state.get("tier"),
        "tags": state.get("tags", []),
        "purchase_count": m["purchase_count"],
        "total_spend": m["total_spend"],
        "last_purchase_at": m["last_purchase_at"],
        "events_by_type": m["events_by_type"],
        "event_count": m["event_count"],
        "last_event_at": m["last_event_at"],
        "first_seen": m["first_seen"],
        "lifetime_points": state.get("lifetime", 0.0),
        "points": wallet.balance(state).get(wallet.POINTS, 0.0) if wanted("points") else 0.0,
        "period_purchases": m["period_purchases"],
        "period_spend": m["period_spend"],
        "period_points": m["period_points"],
        "birthday": customer.get("birthday"),
        "registered_at": state.get("registered_at"),
        "rfm": rfm(m, program.rfm, now) if wanted("rfm") else {},
        "badges": held_badges(state),
        "traits": {},
    }
    if state.get("consent_record"):
        profile["consent_record"] = state["consent_record"]
    if with_traits:
        profile["traits"] = traits(program, bindings(program, profile))
    return profile if only is None else reduce(profile, only)


def held_badges(state: dict[str, Any]) -> list[str]:
    """`profile.badges`: the ids of the badges the customer holds (processors/loyalty/badges.py)."""
    return sorted(b for b, info in state.get("badges", {}).items() if info.get("count", 0) > 0)


def traits(program: Program, activation: Any) -> dict[str, Any]:
    """Computed traits over the profile (`activation`: a profile dict or its Bindings)."""
    if not program.traits:
        return {}
    if isinstance(activation, dict):
        activation = bindings(program, activation)
    out = {}
    for trait in program.traits:
        try:
            out[trait.name] = compile_rule(trait.expression).evaluate(activation)
        except RuleError:
            out[trait.name] = None
    return out


def bindings(program: Program, profile: dict[str, Any]) -> Bindings:
    """CEL bindings of a post-event profile, reduced to what tiers and traits read."""
    reduced = reduce(profile, final_fields(program))
    return Bindings({"profile": lambda: reduced})


_FIELDS: dict[int, tuple[Program, dict[str, Fields | None], Fields | None]] = {}
RULE_VARIABLES = ("profile", "properties", "event", "customer", "order", "product")


def rule_sources(program: Program) -> list[str]:
    """The CEL the engine evaluates besides campaign rules (for the fields rules read):
    achievements' conditions and sums, webhook reaction templates."""
    out = [s for a in program.achievements for s in (a.condition, a.sum) if s]
    out += [e for c in program.campaigns if c.webhook for e in reactions.expressions(c.webhook.payload)]
    return out


def _fields(program: Program) -> tuple[dict[str, Fields | None], Fields | None]:
    """What campaign rules read of each variable, and what tiers and traits read of the
    profile; computed once per program version."""
    cached = _FIELDS.get(id(program))
    if cached is None or cached[0] is not program:
        rules = [s for c in program.campaigns for s in (c.condition, c.formula)]
        rules += rule_sources(program)  # achievements and webhook reaction templates
        final = [t.entry for t in program.tiers.levels] + [t.expression for t in program.traits]
        if len(_FIELDS) > 16:
            _FIELDS.clear()
        by_variable = {v: fields_of(v, rules) for v in RULE_VARIABLES}
        cached = _FIELDS[id(program)] = (program, by_variable, fields_of("profile", final))
    return cached[1], cached[2]


def rule_fields(program: Program, variable: str = "profile") -> Fields | None:
    return _fields(program)[0][variable]


def final_fields(program: Program) -> Fields | None:
    return _fields(program)[1]
