"""The wallet: a ledger of lines per customer, consumed oldest-expiring first.

A customer's wallet lives in their state dict as open `buckets` (accumulations with what is left
of them) plus `reservations` (lines taken out but not yet redeemed). Every ledger line names the
campaign and rule that produced it, so a balance can always be explained line by line.
"""

from __future__ import annotations

import heapq
from typing import Any

from processors.loyalty.bounds import redemption_error

Line = dict[str, Any]
Touched = dict[str, Line] | None  # bucket id -> bucket an engine call changed (its wallet `lines`)
POINTS = "POINTS"
EPS = 1e-9
EXPIRATIONS_SHOWN = 3  # dated `totals` entries per reward: keeps the wallet's size bounded


def _touch(touched: Touched, bucket: Line) -> None:
    if touched is not None:
        touched[bucket["id"]] = bucket


def line_id(event_id: str, kind: str, index: int) -> str:
    """Deterministic, so a replayed event produces the same ledger ids (cheaper than uuid5)."""
    return f"{event_id}:{kind}:{index}"


def new_wallet(state: dict[str, Any]) -> dict[str, Any]:
    state.setdefault("buckets", [])
    state.setdefault("reservations", {})
    state.setdefault("lifetime", 0.0)
    return state


def line(
    kind: str,
    amount: float,
    reward_id: str,
    event_id: str,
    issued_at: int,
    index: int,
    campaign_id: str | None = None,
    rule: str | None = None,
    expiration_date: int | None = None,
) -> Line:
    return {
        "id": line_id(event_id, kind, index),
        "amount": amount,
        "reward_id": reward_id,
        "campaign_id": campaign_id,
        "rule": rule,
        "event_id": event_id,
        "issued_at": issued_at,
        "expiration_date": expiration_date,
        "kind": kind,
    }


def accumulate(state: dict[str, Any], entry: Line, touched: Touched = None) -> Line:
    """Add an ACCUMULATION line as a new open bucket."""
    bucket = {**entry, "remaining": entry["amount"]}
    state["buckets"].append(bucket)
    _touch(touched, bucket)
    if entry["reward_id"] == POINTS:
        state["lifetime"] += entry["amount"]
    return entry


def balance(state: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for b in state["buckets"]:
        out[b["reward_id"]] = out.get(b["reward_id"], 0.0) + b["remaining"]
    return out


def pending(state: dict[str, Any]) -> float:
    return sum(
        (
            ln["amount"]
            for r in state["reservations"].values()
            for ln in r["lines"]
            if ln["reward_id"] == POINTS
        ),
        0.0,
    )


def _fifo(state: dict[str, Any], reward_id: str) -> list[dict[str, Any]]:
    open_ = [b for b in state["buckets"] if b["reward_id"] == reward_id and b["remaining"] > EPS]
    return sorted(
        open_,
        key=lambda b: (b["expiration_date"] is None, b["expiration_date"] or 0, b["issued_at"]),
    )


def shortfall(state: dict[str, Any], wanted: list[dict[str, Any]]) -> str | None:
    """Why a set of redemptions cannot be honoured, or None when the balance covers it."""
    if not wanted:
        return None
    need: dict[str, float] = {}
    for r in wanted:
        out_of_range = redemption_error(r["reward_id"], r["amount"])
        if out_of_range:
            return out_of_range
        need[r["reward_id"]] = need.get(r["reward_id"], 0.0) + r["amount"]
    have = balance(state)
    for reward_id, amount in need.items():
        if amount <= 0:
            return f"redemption amount must be positive, got {amount} {reward_id}"
        if have.get(reward_id, 0.0) + EPS < amount:
            available = have.get(reward_id, 0.0)
            return f"insufficient balance: {amount:g} {reward_id} asked, {available:g} available"
    return None


def consume(
    state: dict[str, Any],
    reward_id: str,
    amount: float,
    event_id: str,
    now: int,
    kind: str,
    touched: Touched = None,
) -> list[Line]:
    """Take `amount` out of the open buckets, oldest-expiring first; one line per bucket."""
    lines: list[Line] = []
    left = amount
    for bucket in _fifo(state, reward_id):
        if left <= EPS:
            break
        take = min(bucket["remaining"], left)
        bucket["remaining"] -= take
        left -= take
        _touch(touched, bucket)
        entry = line(
            kind,
            take,
            reward_id,
            event_id,
            now,
            len(lines),
            bucket["campaign_id"],
            bucket["rule"],
            bucket["expiration_date"],
        )
        entry["source_line_id"] = bucket["id"]
        lines.append(entry)
    _drop_empty(state)
    return lines


def restore(state: dict[str, Any], lines: list[Line], touched: Touched = None) -> None:
    """Put consumed lines back into their buckets (cancelled reservation, reversed redemption)."""
    by_id = {b["id"]: b for b in state["buckets"]}
    for entry in lines:
        bucket = by_id.get(entry.get("source_line_id", ""))
        if bucket is not None:
            bucket["remaining"] += entry["amount"]
            _touch(touched, bucket)
            continue
        source = {**entry, "id": entry.get("source_line_id") or entry["id"]}
        source["kind"] = "ACCUMULATION"
        source["remaining"] = entry["amount"]
        state["buckets"].append(source)
        by_id[source["id"]] = source
        _touch(touched, source)


def expire(state: dict[str, Any], now: int, touched: Touched = None) -> list[Line]:
    """Close every bucket whose expiration date has passed; one EXPIRY line each."""
    lines = []
    for bucket in state["buckets"]:
        exp = bucket["expiration_date"]
        if exp is not None and exp <= now and bucket["remaining"] > EPS:
            entry = line(
                "EXPIRY",
                bucket["remaining"],
                bucket["reward_id"],
                bucket["id"],
                now,
                0,
                bucket["campaign_id"],
                bucket["rule"],
                exp,
            )
            entry["source_line_id"] = bucket["id"]
            lines.append(entry)
            bucket["remaining"] = 0.0
            _touch(touched, bucket)
    if lines:
        _drop_empty(state)
    return lines


def next_expiry(state: dict[str, Any]) -> int | None:
    dates = [b["expiration_date"] for b in state["buckets"] if b["expiration_date"] is not None]
    return min(dates) if dates else None


def reverse_accumulation(
    state: dict[str, Any], entry: Line, event_id: str, now: int, index: int, touched: Touched = None
) -> Line:
    """Take back an accumulation: its own bucket first, then FIFO; a rest is owed (negative)."""
    left = entry["amount"]
    bucket = next((b for b in state["buckets"] if b["id"] == entry["id"]), None)
    if bucket is not None:
        take = min(bucket["remaining"], left)
        bucket["remaining"] -= take
        left -= take
        _touch(touched, bucket)
    for other in _fifo(state, entry["reward_id"]):
        if left <= EPS:
            break
        take = min(other["remaining"], left)
        other["remaining"] -= take
        left -= take
        _touch(touched, other)
    reversal = line(
        "REVERSAL",
        -entry["amount"],
        entry["reward_id"],
        event_id,
        now,
        index,
        entry["campaign_id"],
        entry["rule"],
    )
    if left > EPS:  # already spent: the customer owes it
        owed = {**reversal, "amount": -left, "remaining": -left}
        state["buckets"].append(owed)
        _touch(touched, owed)
    if entry["reward_id"] == POINTS:
        state["lifetime"] -= entry["amount"]
    _drop_empty(state)
    return reversal


def _drop_empty(state: dict[str, Any]) -> None:
    state["buckets"] = [b for b in state["buckets"] if abs(b["remaining"]) > EPS]


def summary(state: dict[str, Any], customer_id: str, touched: Touched = None) -> dict[str, Any]:
    """The `Wallet` record of results and notifications (schemas/wallet.py), of bounded size
    (docs/loyalty.md, "The wallet"): totals per reward and the next expirations, not every open
    line; `lines` are only the open lines this call changed (`touched`), amount = what is left
    (0: closed)."""
    bal, totals = _totals(state["buckets"])
    reserved = _reserved(state)
    return {
        "customer_id": customer_id,
        "balance": bal,
        "points": bal.get(POINTS, 0.0),
        "lifetime": state["lifetime"],
        "pending": reserved.get(POINTS, 0.0),
        "reserved": reserved,
        "totals": totals,
        "lines": [_public(b) for b in (touched or {}).values()],
    }


def _totals(buckets: list[Line]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Balance per reward, and per reward its next EXPIRATIONS_SHOWN expiration dates with the
    amount expiring then, plus what never expires (expiration_date null): one pass."""
    bal: dict[str, float] = {}
    dated: dict[str, dict[int | None, float]] = {}
    for b in buckets:
        reward, left = b["reward_id"], b["remaining"]
        bal[reward] = bal.get(reward, 0.0) + left
        by_date = dated.setdefault(reward, {})
        by_date[b["expiration_date"]] = by_date.get(b["expiration_date"], 0.0) + left
    totals: list[dict[str, Any]] = []
    for reward in sorted(dated):
        by_date = dated[reward]
        never = by_date.pop(None, 0.0)
        soonest = sorted(by_date) if len(by_date) <= 64 else heapq.nsmallest(EXPIRATIONS_SHOWN, by_date)
        for at in soonest[:EXPIRATIONS_SHOWN]:
            totals.append({"total": by_date[at], "reward_id": reward, "expiration_date": at})
        if abs(never) > EPS:
            totals.append({"total": never, "reward_id": reward, "expiration_date": None})
    return bal, totals


def _reserved(state: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in state["reservations"].values():
        for ln in r["lines"]:
            out[ln["reward_id"]] = out.get(ln["reward_id"], 0.0) + ln["amount"]
    return out


def _public(bucket: dict[str, Any]) -> Line:
    """The open line as shown: `amount` = what is left (same key order as the bucket)."""
    out = dict(bucket)  # a C-level copy; cheaper than filtering keys one by one
    left = out.pop("remaining")
    out["amount"] = left if abs(left) > EPS else 0.0
    return out
