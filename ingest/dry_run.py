"""POST /behavior/events?dry_run=true: what an event would do to its customer as they are now,
without publishing or storing anything.

The customer's starting state is built from what the sink has written to PostgreSQL (their
profile in `customers`, lifetime points and tier in `wallets`, the open ledger lines of
`wallet_lines`, and how often each campaign rewarded them from the `events` table), then the
event runs through the real LoyaltyProcessor in memory under the current program, the same
replay code as POST /admin/simulate (processors/loyalty/replay.py). PostgreSQL lags the
processor's own state, so the answer carries a note of what the read can miss (NOTE).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ingest.simulate import iso, notification_view, result_view
from processors.loyalty import campaigns, engine
from processors.loyalty.replay import Replay
from processors.loyalty.tiers import find, info
from schemas.program import Program

NOTE = (
    "The starting state is what PostgreSQL held when the dry run read it: events accepted but "
    "not yet processed and stored (in flight on Kafka, or still in the sink's batch) are not "
    "in it, nor are open reservations (unfulfilled events), achievement progress, the tier's "
    "requalification period, or campaign budgets spent by other customers (budgets are "
    "taken as not exhausted). A live event is processed against the processor's own state, "
    "so its result can differ when those matter."
)
# the profile fields the engine keeps as metrics (processors/loyalty/profile.py `metrics`)
METRICS = (
    "purchase_count", "total_spend", "last_purchase_at", "events_by_type", "event_count",
    "last_event_at", "first_seen", "period_purchases", "period_spend", "period_points",
)  # fmt: skip
TIMES = ("last_purchase_at", "last_event_at", "first_seen", "registered_at")


def _ms(value: Any) -> Any:
    """An ISO time (as the lookup returns timestamps) as epoch ms, other values as they are."""
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value).timestamp() * 1000)
        except ValueError:
            return value
    return value


def starting_state(program: Program, customer_id: str, stored: dict[str, Any]) -> dict[str, Any] | None:
    """The engine state of a customer from the sink's rows (`Lookup.customer_state`), or None
    when PostgreSQL knows nothing of them (the event then meets a new customer, as it would)."""
    profile, wallet_row = stored.get("profile"), stored.get("wallet")
    lines, uses = stored.get("lines") or [], stored.get("uses") or []
    if not profile and not wallet_row and not lines:
        return None
    profile = profile or {}
    state = engine.new_state(customer_id)
    for name in METRICS:
        if profile.get(name) is not None:
            state["metrics"][name] = _ms(profile[name]) if name in TIMES else profile[name]
    for line in lines:  # each open line with what is left of it
        state["buckets"].append({**line, "remaining": float(line.get("amount") or 0.0)})
    state["lifetime"] = float((wallet_row or {}).get("lifetime") or profile.get("lifetime_points") or 0.0)
    tier = (wallet_row or {}).get("tier") or profile.get("tier")
    if isinstance(tier, str) and find(program, tier) is not None:
        state["tier"] = tier
    state["anonymous"] = bool(profile.get("anonymous", False))
    for key in ("consent", "tags"):
        if profile.get(key):
            state[key] = profile[key]
    if profile.get("birthday") is not None:
        state["customer"] = {"birthday": profile["birthday"]}
    if profile.get("registered_at") is not None:
        state["registered_at"] = _ms(profile["registered_at"])
    state["badges"] = {b: {"count": 1} for b in profile.get("badges") or [] if isinstance(b, str)}
    for at, campaign_id in uses:  # per-customer limits and per-period caps count these
        campaigns.counted(state, program, campaign_id, {"issued_at": _ms(at)}, +1)
    return state


def evaluate(program: Program, record: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """Run `record` (an event as ingest built it) for its customer from `stored`."""
    cid = record["customer_id"]
    state = starting_state(program, cid, stored)
    before = info(find(program, state.get("tier"))) if state else None
    context = {"found": state is not None, "already_processed": bool(stored.get("processed")), "note": NOTE}
    answer: dict[str, Any] = {
        "event_id": record["id"],
        "customer_id": cid,
        "type": record["type"],
        "at": iso(record["received_at"]),
        "program_version": program.version,
    }
    if record["path"] == "tracking":  # the loyalty processor never sees it
        return {**answer, "tracking_only": True, "results": [], "notifications": [], "state": context}
    replay = Replay(program, record["received_at"])
    if state is not None:
        replay.seed(cid, state)
    _, step = replay.run(record)
    results = [result_view(r) for r in step.results]
    own = next((r for r in results if r["event_id"] == record["id"]), results[0] if results else {})
    after = replay.state(cid)
    return {
        **answer,
        "tracking_only": False,
        **{k: own.get(k) for k in ("status", "reason", "points", "rules_applied", "rules_skipped")},
        **{k: own.get(k, []) for k in ("accumulations", "redemptions")},
        "tier": {"before": before, "after": info(find(program, after.get("tier"))) if after else before},
        "wallet": own.get("wallet", {}),
        "results": results,
        "notifications": [notification_view(n) for n in step.notifications],
        "state": context,
    }
