"""Tiers: the highest level whose entry condition (CEL over the profile) holds.

Upgrades happen on the event that qualifies; downgrades only at the end of a reporting period
(CRON_DOWNGRADE) or when a reversal takes the customer below the entry (REVERSAL).
"""

from __future__ import annotations

from typing import Any

from processors.loyalty.rules import compile_rule
from schemas.program import Program, Tier

_SORTED: dict[int, tuple[Program, list[Tier], dict[str, Tier]]] = {}


def _index(program: Program) -> tuple[list[Tier], dict[str, Tier]]:
    """Levels sorted and by id, once per program version (read several times per event)."""
    cached = _SORTED.get(id(program))
    if cached is None or cached[0] is not program:
        if len(_SORTED) > 16:
            _SORTED.clear()
        ordered = sorted(program.tiers.levels, key=lambda t: t.level)
        by_id: dict[str, Tier] = {}
        for t in program.tiers.levels:
            by_id.setdefault(t.id, t)  # the first one wins, as a linear search would
        cached = _SORTED[id(program)] = (program, ordered, by_id)
    return cached[1], cached[2]


def levels(program: Program) -> list[Tier]:
    return list(_index(program)[0])


def find(program: Program, tier_id: str | None) -> Tier | None:
    return _index(program)[1].get(tier_id) if tier_id is not None else None


def qualify(program: Program, activation: Any, above: int = -1) -> Tier | None:
    """The highest tier above level `above` the profile qualifies for (None: none)."""
    for tier in reversed(_index(program)[0]):
        if tier.level <= above:
            return None
        if compile_rule(tier.entry).test(activation):
            return tier
    return None


def info(tier: Tier | None) -> dict[str, Any] | None:
    return {"id": tier.id, "name": tier.name, "level": tier.level} if tier else None


def multiplier(program: Program, tier_id: str | None) -> float:
    tier = find(program, tier_id)
    return tier.multiplier if tier else 1.0


def change(
    customer_id: str,
    old: Tier | None,
    new: Tier | None,
    triggered_by: str,
    event_id: str | None,
    event_type: str | None,
) -> dict[str, Any]:
    """The TIER_UPGRADE / TIER_DOWNGRADE webhook payload: the product docs' flat fields
    (a side with no tier is null; the trigger fields are null for CRON_DOWNGRADE)."""
    return {
        "customer_id": customer_id,
        "from_tier_id": old.id if old else None,
        "to_tier_id": new.id if new else None,
        "from_tier_name": old.name if old else None,
        "to_tier_name": new.name if new else None,
        "from_tier_level": old.level if old else None,
        "to_tier_level": new.level if new else None,
        "triggered_by": triggered_by,
        "trigger_event_id": event_id,
        "trigger_event_type": event_type,
    }
