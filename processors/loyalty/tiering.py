"""A customer's tier moving within one engine call: the entry tier and period of a new
customer, an upgrade as soon as the post-event profile qualifies, a downgrade on a reversal,
a debit or a period end. The rules themselves are in tiers.py."""

from __future__ import annotations

from typing import Any

from processors.loyalty import notifications as n
from processors.loyalty import profile, tiers
from processors.loyalty.core import DAY_MS, Step
from processors.loyalty.envelope import uid


def track(step: Step) -> None:
    """A customer in a tiered program has a tier (the entry one at first) and a period."""
    if step.program.tiers.levels and step.state.get("tier") is None:
        step.state["tier"] = tiers.levels(step.program)[0].id  # the entry tier, silently
    if step.program.tiers.levels and "tier_period_end" not in step.state:
        end = step.now + step.program.tiers.reporting_period_days * DAY_MS
        step.state["tier_period_end"] = end
        step.out.timers.append((end, f"tier:{step.cid}", {"type": "tier_period"}))


def upgrade(step: Step, event: dict) -> None:
    """Upgrade at once when the post-event profile qualifies for a higher tier. The
    profile built here is kept for `finish` (state does not change in between)."""
    prof, binds = step.final_profile()
    if not step.program.tiers.levels:
        return
    old = tiers.find(step.program, step.state.get("tier"))
    new = tiers.qualify(step.program, binds, old.level if old else -1)
    if new is None:
        return
    step.state["tier"] = prof["tier"] = new.id
    step.final = (prof, profile.bindings(step.program, prof))
    data = tiers.change(step.cid, old, new, "EVENT", event["id"], event["type"])
    step.notify(event["id"], n.TIER_UPGRADE, data)


def downgrade(step: Step, triggered_by: str, event_id: str | None, event_type: str | None) -> None:
    old = tiers.find(step.program, step.state.get("tier"))
    new = _target(step)
    if old is None or (new is not None and new.level >= old.level):
        return
    step.state["tier"] = new.id if new else None
    step.final = None
    data = tiers.change(step.cid, old, new, triggered_by, event_id, event_type)
    step.notify(event_id or uid("tier", step.cid, step.now), n.TIER_DOWNGRADE, data)


def _target(step: Step) -> Any:
    step.final = None  # state changed since any earlier build
    _, binds = step.final_profile()
    return tiers.qualify(step.program, binds)
