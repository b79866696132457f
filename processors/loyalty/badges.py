"""Badges and achievements: goals over matching events, kept in the customer's state.

State (the `customers` store, so the processor's transactions make every award exactly once):
`badges[badge_id]` = {count, first_awarded_at, awarded_at, trigger_event_id, trigger_event_type}
and `achievements[id]` = {value, completed, done, epoch, entries}. `entries` ([issued_at,
amount, event_id]) exist only for achievements with `period_days` (a rolling window on the
events' issued_at); `epoch` moves on every completion and revocation, so a reversal knows
whether the progress it would take back is still the one its event added to.

What an event did is in its result's detail (`achievements` progress, `badges` changes), which
the `events` store keeps: a reversal reads it back and takes the badges back (BADGE_REVOKED).
"""

from __future__ import annotations

from typing import Any

from processors.loyalty import campaigns
from processors.loyalty import notifications as n
from processors.loyalty.core import Step
from processors.loyalty.rules import Bindings, RuleError, compile_rule
from schemas.program import Achievement

DAY_MS = 86_400_000


def _progress(state: dict[str, Any], achievement_id: str) -> dict[str, Any]:
    return state.setdefault("achievements", {}).setdefault(
        achievement_id, {"value": 0.0, "completed": 0, "done": False, "epoch": 0}
    )


def _added(a: Achievement, act: Bindings) -> float | str:
    """What an event adds (1, or its `sum`), or why it adds nothing."""
    if a.sum is None:
        return 1.0
    try:
        amount = compile_rule(a.sum).amount(act)
    except RuleError as exc:
        return f"sum failed: {exc}"
    return amount if amount > 0 else "sum not positive"


def achievements(step: Step, event: dict, act: Bindings) -> list[dict[str, Any]]:
    """Advance every achievement the event matches; award the badge of each completed."""
    out: list[dict[str, Any]] = []
    for a in step.program.achievements:
        if not a.enabled or event["type"] not in a.triggers:
            continue
        p = _progress(step.state, a.id)
        if p["done"] and not a.repeatable:
            continue
        if not compile_rule(a.condition).test(act):
            continue
        added = _added(a, act)
        if isinstance(added, str):
            out.append({"achievement_id": a.id, "skipped": added})
            continue
        out.append(_advance(step, a, p, event, added))
    return out


def _advance(step: Step, a: Achievement, p: dict, event: dict, added: float) -> dict[str, Any]:
    before = p["value"]
    entry: dict[str, Any] = {"achievement_id": a.id, "badge_id": a.badge_id, "added": added}
    if a.period_days:
        since = event["issued_at"] - a.period_days * DAY_MS
        kept = [e for e in p.get("entries", []) if e[0] > since]
        before = sum(e[1] for e in kept)
        p["entries"] = [*kept, [event["issued_at"], added, event["id"]]]
    p["value"] = before + added
    completed = p["value"] >= a.target - 1e-9
    entry |= {"progress": p["value"], "target": a.target, "completed": completed}
    if completed:
        entry["before"] = before  # what a reversal of this event gives back
        if a.period_days:
            entry["restore"] = p["entries"][:-1]
        p["completed"] += 1
        p["epoch"] += 1
        p["done"] = True
        if a.repeatable:  # the next round starts from nothing
            p["value"] = 0.0
            if a.period_days:
                p["entries"] = []
        award(step, a.badge_id, event, {"achievement_id": a.id})
    entry |= {"times": p["completed"], "epoch": p["epoch"], "period_days": a.period_days}
    if a.notify_progress:
        data = {
            "customer_id": step.cid,
            "achievement_id": a.id,
            "achievement_name": a.name,
            "badge_id": a.badge_id,
            "progress": entry["progress"],
            "target": a.target,
            "completed": completed,
            "times": p["completed"],
            "period_days": a.period_days,
            "trigger_event_id": event["id"],
            "trigger_event_type": event["type"],
        }
        step.notify(f"{event['id']}:{a.id}", n.ACHIEVEMENT_PROGRESS, data)
    return entry


def award(step: Step, badge_id: str, event: dict, source: dict[str, Any]) -> None:
    """One more of the badge (a repeatable achievement or a campaign may award it again);
    BADGE_AWARDED each time."""
    info = step.state.setdefault("badges", {}).setdefault(badge_id, {"count": 0})
    info["count"] += 1
    info.setdefault("first_awarded_at", step.now)
    info |= {"awarded_at": step.now, "trigger_event_id": event["id"], "trigger_event_type": event["type"]}
    change = _badge_change(step, "AWARDED", badge_id, event["id"], event["type"], info, source)
    origin = source.get("achievement_id") or source.get("campaign_id")
    step.notify(f"{event['id']}:{badge_id}:{origin}", n.BADGE_AWARDED, _badge_data(step, change))


def _badge_change(
    step: Step, action: str, badge_id: str, event_id: str, event_type: str, info: dict, source: dict
) -> dict[str, Any]:
    badge = step.program.badge(badge_id)
    change = {
        "badge_id": badge_id,
        "badge_name": badge.name if badge else badge_id,
        "action": action,
        "at": step.now,
        "count": info["count"],
        "first_awarded_at": info.get("first_awarded_at"),
        "awarded_at": info.get("awarded_at"),  # the latest award
        "trigger_event_id": event_id,
        "trigger_event_type": event_type,
        "achievement_id": source.get("achievement_id"),
        "campaign_id": source.get("campaign_id"),
        **({"counted": True} if source.get("counted") else {}),
    }
    step.badge_changes.append(change)
    return change


def _badge_data(step: Step, change: dict[str, Any]) -> dict[str, Any]:
    data = {
        "customer_id": step.cid,
        "badge_id": change["badge_id"],
        "badge_name": change["badge_name"],
        "trigger_event_id": change["trigger_event_id"],
        "trigger_event_type": change["trigger_event_type"],
        "achievement_id": change["achievement_id"],
        "campaign_id": change["campaign_id"],
        "count": change["count"],
    }
    key = "awarded_at" if change["action"] == "AWARDED" else "revoked_at"
    return {**data, key: change["at"]}


def campaign_badge(step: Step, event: dict, campaign_id: str, badge_id: str, counted: bool) -> None:
    award(step, badge_id, event, {"campaign_id": campaign_id, "counted": counted})


def take_back(step: Step, event: dict, record: dict[str, Any]) -> list[dict[str, Any]]:
    """A reversal: the event's progress leaves its achievements and its badges are revoked
    (BADGE_REVOKED). Returns the badge changes for the REVERSED result."""
    by_id = {a.id: a for a in step.program.achievements}
    for entry in record.get("achievements", []):
        a, p = (
            by_id.get(entry["achievement_id"]),
            step.state.get("achievements", {}).get(entry["achievement_id"]),
        )
        if a is None or p is None or "progress" not in entry:
            continue
        if entry["completed"]:
            p["completed"] -= 1
            p["epoch"] += 1
            p["done"] = p["completed"] > 0
            keep_after = a.repeatable  # what later events added to the next round stays
            p["value"] = entry["before"] + (p["value"] if keep_after else 0.0)
            if a.period_days:
                p["entries"] = entry.get("restore", []) + (p.get("entries", []) if keep_after else [])
        elif entry.get("epoch") == p["epoch"]:
            p["value"] = max(0.0, p["value"] - entry["added"])
            if a.period_days:
                p["entries"] = [e for e in p.get("entries", []) if e[2] != event["id"]]
    changes = []
    for award in record.get("badges", []):
        if award.get("action") != "AWARDED":
            continue
        info = step.state.get("badges", {}).get(award["badge_id"])
        if info is None or info.get("count", 0) <= 0:
            continue
        info["count"] -= 1
        if award.get("counted") and award.get("campaign_id"):  # a badge-only award counted
            campaigns.counted(step.state, step.program, award["campaign_id"], event, -1)
        source = {"achievement_id": award.get("achievement_id"), "campaign_id": award.get("campaign_id")}
        change = _badge_change(step, "REVOKED", award["badge_id"], event["id"], event["type"], info, source)
        origin = source["achievement_id"] or source["campaign_id"]
        step.notify(f"{event['id']}:{award['badge_id']}:{origin}", n.BADGE_REVOKED, _badge_data(step, change))
        changes.append(change)
    return changes
