"""Audiences processor: profiles.changes -> audiences.membership (ENTER / LEAVE).

State per partition: `profiles` (latest flat profile per customer, so timers and definition
changes can re-evaluate without a new event) and `memberships` (customer -> {audience: since}),
both changelogged by the runtime. A durable timer per customer re-evaluates at the next day
boundary when a condition reads a `days_since_*` field, so customers leave (or enter) by the
passing of time alone.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from prometheus_client import Counter

from processors.audiences import rules
from processors.runtime.api import Context, Processor, Record, Timer
from schemas.program import Program
from schemas.topics import AUDIENCES_MEMBERSHIP, PROFILES_CHANGES

log = logging.getLogger(__name__)

PROFILES = "profiles"
MEMBERSHIPS = "memberships"
META = "meta"  # "definitions" -> fingerprint of the audiences the partition was last swept with

MEMBERSHIP_CHANGES = Counter("audience_membership_changes_total", "Audience ENTER/LEAVE emitted", ["action"])
EVALUATIONS = Counter("audience_evaluations_total", "Profiles evaluated", ["trigger"])


def timer_id(customer_id: str) -> str:
    return f"audience-reeval:{customer_id}"


def parse_profile(value: dict[str, Any]) -> dict[str, Any]:
    """The flat profile of a Profile record; the record's own flags win over the JSON."""
    profile = orjson.loads(value.get("profile") or "{}")
    profile.setdefault("customer_id", value["customer_id"])
    if value.get("anonymous"):
        profile["anonymous"] = True
    if value.get("tier") is not None:
        profile.setdefault("tier", value["tier"])
    return profile


class AudiencesProcessor(Processor):
    name = "audiences"
    inputs = [PROFILES_CHANGES]
    outputs = [AUDIENCES_MEMBERSHIP]
    stores = [PROFILES, MEMBERSHIPS, META]

    def __init__(self) -> None:
        self._program: Program | None = None
        self._compiled: rules.CompiledAudiences | None = None

    def compiled(self, program: Program) -> rules.CompiledAudiences:
        """Compile the audiences once per program version (object identity)."""
        if program is not self._program:
            self._compiled = rules.compile_program(program)
            self._program = program
        assert self._compiled is not None
        return self._compiled

    # -- handlers -----------------------------------------------------------------------------
    def process(self, ctx: Context, record: Record) -> None:
        self.sync_definitions(ctx, ctx.config)
        customer_id = record.key or record.value["customer_id"]
        profile = parse_profile(record.value)
        ctx.store(PROFILES).put(customer_id, profile)
        self.reevaluate(ctx, customer_id, profile, "profile_change")

    def on_timer(self, ctx: Context, timer: Timer) -> None:
        self.sync_definitions(ctx, ctx.config)
        profile = ctx.store(PROFILES).get(timer.key)
        if profile is not None:
            self.reevaluate(ctx, timer.key, profile, "time")

    def on_config(self, ctx: Context, program: Program) -> None:
        self.sync_definitions(ctx, program)

    def sync_definitions(self, ctx: Context, program: Program) -> None:
        """Re-evaluate every stored customer of this partition once per change of the audience
        definitions. The swept fingerprint is stored, so a change made while the processor was
        down is caught up on the first record or timer after the restart."""
        compiled = self.compiled(program)
        meta = ctx.store(META)
        if meta.get("definitions") == compiled.fingerprint:
            return
        meta.put("definitions", compiled.fingerprint)
        for customer_id, profile in list(ctx.store(PROFILES).range()):
            self.reevaluate(ctx, customer_id, profile, "definition_change")

    # -- evaluation ---------------------------------------------------------------------------
    def reevaluate(self, ctx: Context, customer_id: str, profile: dict[str, Any], why: str) -> None:
        """Diff current membership against the audiences the profile matches now; emit changes."""
        if not rules.is_identified(profile):
            return
        ctx.count(EVALUATIONS, why)  # counted when the transaction commits
        compiled = self.compiled(ctx.config)
        now = ctx.now()
        matched = rules.evaluate(compiled, customer_id, profile, now)
        memberships = ctx.store(MEMBERSHIPS)
        current: dict[str, int] = memberships.get(customer_id) or {}
        changed = dict(current)
        for audience_id in sorted(matched - current.keys()):
            changed[audience_id] = now
            self.emit(ctx, customer_id, audience_id, "ENTER", why, now)
        for audience_id in sorted(current.keys() - matched):
            del changed[audience_id]
            reason = why if audience_id in {a.id for a in compiled.audiences} else "audience_removed"
            self.emit(ctx, customer_id, audience_id, "LEAVE", reason, now)
        if changed != current:
            if changed:
                memberships.put(customer_id, changed)
            else:
                memberships.delete(customer_id)
        self.schedule_recheck(ctx, compiled, customer_id, profile, now)

    def schedule_recheck(
        self,
        ctx: Context,
        compiled: rules.CompiledAudiences,
        customer_id: str,
        profile: dict[str, Any],
        now: int,
    ) -> None:
        at = rules.next_boundary(compiled, profile, now) if compiled.time_based else None
        if at is None:
            ctx.cancel(timer_id(customer_id))
        else:
            ctx.schedule(at, customer_id, {}, timer_id(customer_id))

    def emit(
        self, ctx: Context, customer_id: str, audience_id: str, action: str, reason: str, at: int
    ) -> None:
        ctx.count(MEMBERSHIP_CHANGES, action)
        ctx.emit(
            AUDIENCES_MEMBERSHIP,
            customer_id,
            {
                "audience_id": audience_id,
                "customer_id": customer_id,
                "action": action,
                "reason": reason,
                "at": at,
                "config_version": ctx.config.version,
            },
        )


def build() -> Processor:
    return AudiencesProcessor()
