"""MERGE: an anonymous customer's state, re-keyed to the known id it identified as
(commands.identify), applied here once per anonymous id (by source id, kept for ever in
`merged_from`, and by the command's id); sends CUSTOMER_ANONYMOUS_TO_REGISTERED. See
identity.py for the whole protocol."""

from __future__ import annotations

from typing import Any

import orjson

from processors.loyalty import notifications as n
from processors.loyalty import profile, tiering, tiers, wallet
from processors.loyalty.core import Step
from processors.loyalty.envelope import as_json
from processors.loyalty.identity import MERGED_FROM, transfer
from processors.loyalty.output import Output

SUMMED = ("purchase_count", "total_spend", "event_count", "period_purchases", "period_spend", "period_points")


def merge(step: Step, cmd: dict) -> Output:
    """Apply an anonymous customer's MERGE here, once per anonymous id."""
    p = as_json(cmd.get("payload"))
    source = p["from"]
    done = step.state.setdefault(MERGED_FROM, {})
    if source in done:
        res = step.result(_shown(cmd, p), "RESOLVED", merged_from=source, already_merged=True)
        step.remember(cmd["id"], res, "RESOLVED")
        return step.finish()
    step.expire()
    done[source] = cmd["id"]
    in_lines = []
    for i, b in enumerate(p.get("buckets") or []):
        line = transfer("MERGE_IN", b, cmd["id"], i, step.now, +1)
        bucket = {**b, "id": line["id"], "source_line_id": b["id"], "merged_from": source}
        wallet.add(step.state, bucket, step.touched)
        in_lines.append(line)
    step.state["lifetime"] = step.state.get("lifetime", 0.0) + p.get("lifetime", 0.0)
    _merge_reservations(step, p)
    _merge_metrics(profile.metrics(step.state), p.get("metrics") or {})
    _merge_counts(step.state, p)
    _merge_profile(step, p)
    step.changed()
    tiering.track(step)
    tiering.upgrade(step, cmd)
    data = {"customer_id": step.cid, "anonymous_id": source, "customer": step.state.get("customer", {})}
    step.notify(cmd["id"], n.CUSTOMER_ANONYMOUS_TO_REGISTERED, data)
    res = step.result(
        _shown(cmd, p),
        "RESOLVED",
        merged_from=source,
        transfers=in_lines,
        event_ids=p.get("event_ids") or [],
    )
    step.remember(cmd["id"], res, "RESOLVED")
    return step.finish()


def _merge_reservations(step: Step, p: dict[str, Any]) -> None:
    """Open reservations move with their event records, so fulfil / cancel / expiry work
    here (a FULFILL sent to either id arrives here)."""
    for event_id, reservation in (p.get("reservations") or {}).items():
        step.state["reservations"][event_id] = reservation
        at = reservation["expires_at"]
        step.out.timers.append((at, f"reservation:{event_id}", {"type": "reservation", "event_id": event_id}))
    for event_id, record in (p.get("records") or {}).items():
        step.out.records[event_id] = {**record, "since": step.now}  # indexed for the sweep


def _merge_profile(step: Step, p: dict[str, Any]) -> None:
    """The known id's data wins; the anonymous one fills what it lacks; the PATCH's
    profile fields win over both. A consent the known id never gave keeps the
    anonymous id's answer (a 'no' is not lost)."""
    s = step.state
    s["customer"] = {**(p.get("customer") or {}), **s.get("customer", {}), **(p.get("profile") or {})}
    s["consent"] = {**(p.get("consent") or {}), **s.get("consent", {})}
    if p.get("consent_record") and not s.get("consent_record"):
        s["consent_record"] = p["consent_record"]
    tags = list(s.get("tags", [])) + [t for t in p.get("tags") or [] if t not in s.get("tags", [])]
    if tags:
        s["tags"] = tags
    if p.get("registered_at") is not None:
        s["registered_at"] = min(s.get("registered_at") or p["registered_at"], p["registered_at"])
    s["anonymous"] = False
    mine, theirs = tiers.find(step.program, s.get("tier")), tiers.find(step.program, p.get("tier"))
    if theirs is not None and (mine is None or theirs.level > mine.level):
        s["tier"] = theirs.id  # the higher tier of the two (no webhook: nothing was earned)
        step.final = None


def _shown(cmd: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    """The MERGE as its result shows it: without the moved state (the lines are `transfers`)."""
    return {**cmd, "payload": orjson.dumps({"from": p["from"], "merge_id": p.get("merge_id")}).decode()}


def _merge_metrics(m: dict[str, Any], other: dict[str, Any]) -> None:
    for key in SUMMED:
        m[key] = m.get(key, 0) + other.get(key, 0)
    by_type = m["events_by_type"]
    for name, count in (other.get("events_by_type") or {}).items():
        by_type[name] = by_type.get(name, 0) + count
    for key in ("last_purchase_at", "last_event_at"):
        m[key] = max((v for v in (m.get(key), other.get(key)) if v is not None), default=None)
    m["first_seen"] = min(
        (v for v in (m.get("first_seen"), other.get("first_seen")) if v is not None), default=None
    )


def _merge_counts(state: dict[str, Any], p: dict[str, Any]) -> None:
    """Campaign counts (per-customer limits and period caps) and badges add up; achievement
    progress adds up too (the next matching event completes a goal the sum reached)."""
    mine = state.setdefault("campaigns", {})
    for cid, theirs in (p.get("campaigns") or {}).items():
        c = mine.setdefault(cid, {"count": 0})
        c["count"] = c.get("count", 0) + theirs.get("count", 0)
        for kind, counts in (theirs.get("periods") or {}).items():
            dest = c.setdefault("periods", {}).setdefault(kind, {})
            for period, count in counts.items():
                dest[period] = dest.get(period, 0) + count
    badges = state.setdefault("badges", {})
    for bid, theirs in (p.get("badges") or {}).items():
        b = badges.get(bid)
        if b is None:
            badges[bid] = dict(theirs)
            continue
        b["count"] = b.get("count", 0) + theirs.get("count", 0)
        firsts = [v for v in (b.get("first_awarded_at"), theirs.get("first_awarded_at")) if v is not None]
        b["first_awarded_at"] = min(firsts, default=None)
    progress = state.setdefault("achievements", {})
    for aid, theirs in (p.get("achievements") or {}).items():
        a = progress.get(aid)
        if a is None:
            progress[aid] = dict(theirs)
            continue
        a["value"] = a.get("value", 0.0) + theirs.get("value", 0.0)
        a["completed"] = a.get("completed", 0) + theirs.get("completed", 0)
        a["done"] = bool(a.get("done")) or bool(theirs.get("done"))
        if "entries" in a or "entries" in theirs:
            a["entries"] = sorted([*a.get("entries", []), *theirs.get("entries", [])])
