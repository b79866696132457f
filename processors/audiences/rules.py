"""Audience definitions compiled for one program version, and evaluation of one profile.

Pure functions (no Kafka, no stores) so the rules are easy to test and to reuse.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import cel

from processors.audiences.expressions import Condition, compile_condition, floats
from schemas.program import Audience, Program

DAY_MS = 24 * 3600 * 1000

# derived field -> profile field holding the epoch-ms instant it counts from
DERIVED_DAYS = {
    "days_since_last_event": "last_event_at",
    "days_since_last_purchase": "last_purchase_at",
    "days_since_first_seen": "first_seen",
    "days_since_registered": "registered_at",
}


@dataclass(frozen=True)
class CompiledAudience:
    id: str
    condition: Condition | None
    members: frozenset[str]
    time_fields: tuple[str, ...]  # base profile fields whose day count the condition reads

    def matches(self, customer_id: str, activation: dict[str, Any]) -> bool:
        if customer_id in self.members:
            return True
        return self.condition is not None and self.condition(activation)


def compile_audience(audience: Audience) -> CompiledAudience:
    condition = compile_condition(audience.condition) if audience.condition else None
    time_fields: tuple[str, ...] = ()
    if condition is not None:
        time_fields = tuple(b for d, b in DERIVED_DAYS.items() if condition.references(d))
        if condition.references("now"):
            time_fields += ("now",)
    return CompiledAudience(audience.id, condition, frozenset(audience.members), time_fields)


@dataclass(frozen=True)
class CompiledAudiences:
    """All audiences of one program version, compiled once."""

    version: int
    audiences: tuple[CompiledAudience, ...]
    fingerprint: str  # changes when any audience definition changes
    fields: frozenset[str] | None = None  # profile fields the conditions read (None: all)

    @property
    def time_based(self) -> bool:
        return any(a.time_fields for a in self.audiences)


def compile_program(program: Program) -> CompiledAudiences:
    audiences = tuple(compile_audience(a) for a in program.audiences)
    definitions = "|".join(a.model_dump_json() for a in program.audiences)
    fingerprint = hashlib.sha1(definitions.encode()).hexdigest()
    sources = [a.condition.source for a in audiences if a.condition is not None]
    return CompiledAudiences(program.version, audiences, fingerprint, referenced_fields(sources))


def referenced_fields(sources: list[str]) -> frozenset[str] | None:
    """Top-level profile fields the conditions read, so only those are converted to CEL values
    (the conversion, not the evaluation, dominates the cost). None when `profile` is used whole."""
    fields: set[str] = set()
    for source in sources:
        if _WHOLE_PROFILE.search(source):
            return None
        fields.update(_PROFILE_FIELD.findall(source))
    return frozenset(fields)


_PROFILE_FIELD = re.compile(r"\bprofile\s*\.\s*([A-Za-z_]\w*)")
_WHOLE_PROFILE = re.compile(r"\bprofile\b(?!\s*\.)")


def with_derived(profile: dict[str, Any], now: int) -> dict[str, Any]:
    """The profile plus whole days elapsed since its time fields (absent when unknown)."""
    out = dict(profile)
    for derived, base in DERIVED_DAYS.items():
        at = profile.get(base)
        if isinstance(at, int | float) and not isinstance(at, bool):
            out[derived] = float((now - int(at)) // DAY_MS)
    return out


def activation(profile: dict[str, Any], now: int, fields: frozenset[str] | None = None) -> dict[str, Any]:
    derived = with_derived(profile, now)
    if fields is not None:
        derived = {k: v for k, v in derived.items() if k in fields}
    return {"profile": floats(derived), "now": float(now)}


def is_identified(profile: dict[str, Any]) -> bool:
    """Anonymous customers are left out of real-time audiences until identified."""
    if profile.get("anonymous") is True:
        return False
    return profile.get("identified", True) is not False


def evaluate(compiled: CompiledAudiences, customer_id: str, profile: dict[str, Any], now: int) -> set[str]:
    """Ids of the audiences this profile belongs to at `now`."""
    act = cel.Context(variables=activation(profile, now, compiled.fields))  # converted once
    return {a.id for a in compiled.audiences if a.matches(customer_id, act)}


def next_boundary(compiled: CompiledAudiences, profile: dict[str, Any], now: int) -> int | None:
    """The next instant a time-based condition can flip by the clock alone: the next whole-day
    boundary of any time field a condition reads (or of `now` itself for `now`-conditions)."""
    fields = {f for a in compiled.audiences for f in a.time_fields}
    candidates = []
    for field in fields:
        base = now if field == "now" else profile.get(field)
        if isinstance(base, int | float) and not isinstance(base, bool):
            base = int(base)
            candidates.append(base + ((now - base) // DAY_MS + 1) * DAY_MS)
    return min(candidates) if candidates else None
