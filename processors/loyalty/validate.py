"""Check a program's loyalty rules before it is applied: a typo should fail `config apply`,
not silently make a campaign never match."""

from __future__ import annotations

from processors.loyalty.reactions import expressions
from processors.loyalty.rules import validate
from schemas.program import Program


def rule_errors(program: Program) -> list[str]:
    """One message per CEL rule that does not compile (campaigns and their webhook payloads,
    achievements, tier entries, traits, audience conditions, journey edge conditions)."""
    rules = [(f"campaign {c.id} condition", c.condition) for c in program.campaigns]
    rules += [(f"campaign {c.id} formula", c.formula) for c in program.campaigns]
    rules += [
        (f"campaign {c.id} webhook payload", e)
        for c in program.campaigns
        if c.webhook
        for e in expressions(c.webhook.payload)
    ]
    rules += [(f"achievement {a.id} condition", a.condition) for a in program.achievements]
    rules += [(f"achievement {a.id} sum", a.sum) for a in program.achievements if a.sum]
    rules += [(f"tier {t.id} entry", t.entry) for t in program.tiers.levels]
    rules += [(f"trait {t.name}", t.expression) for t in program.traits]
    rules += [(f"audience {a.id} condition", a.condition) for a in program.audiences if a.condition]
    rules += [
        (f"journey {j.id} edge {e.from_}->{e.to} condition", e.condition)
        for j in program.journeys
        for e in j.edges
    ]
    return [f"{where}: {err}" for where, source in rules if (err := validate(source))]
