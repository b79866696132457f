"""The wallet: a ledger of lines per customer, consumed oldest-expiring first.

A customer's wallet is their open lines, `buckets` (accumulations with what is left of them),
read and changed through `ledger.py` (a list in the state, or the processor's `ledger` store),
plus `reservations` in the state (lines taken out but not yet redeemed). Every ledger line
names the campaign and rule that produced it, so a balance can always be explained line by
line. Spending, expiry and the wallet record read the lines in consumption order and stop as
soon as they have what they need, so their cost follows what they touch, not the history.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from processors.loyalty import ledger
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
    ledger.of(state).add(bucket)
    _touch(touched, bucket)
    if entry["reward_id"] == POINTS:
        state["lifetime"] += entry["amount"]
    return entry


def balance(state: dict[str, Any]) -> dict[str, float]:
    return ledger.of(state).balance()


def ordered(state: dict[str, Any], reward_id: str) -> Iterator[Line]:
    """The reward's open lines in consumption order (lazily: stop reading when done)."""
    return ledger.of(state).ordered(reward_id)


def rewards(state: dict[str, Any]) -> list[str]:
    """The rewards with open lines, sorted."""
    return sorted(ledger.of(state).rewards())


def find(state: dict[str, Any], line_id: str) -> Line | None:
    return ledger.of(state).find(line_id)


def open_lines(state: dict[str, Any]) -> list[Line]:
    """Every open line (reads them all: a merge, a record's first bounded wallet)."""
    return ledger.of(state).lines()


def add(state: dict[str, Any], bucket: Line, touched: Touched = None) -> None:
    """Open a line as it is (a merged-in line keeps its amounts and dates)."""
    ledger.of(state).add(bucket)
    _touch(touched, bucket)


def close_all(state: dict[str, Any], buckets: list[Line], touched: Touched = None) -> None:
    """Nothing left of these lines here (they moved away): they leave the open lines."""
    view = ledger.of(state)
    for bucket in buckets:
        view.set(bucket, 0.0)
        _touch(touched, bucket)
    view.tidy()


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


def _fifo(state: dict[str, Any], reward_id: str) -> Iterator[Line]:
    return (b for b in ordered(state, reward_id) if b["remaining"] > EPS)


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
    view = ledger.of(state)
    for bucket in _fifo(state, reward_id) if left > EPS else ():
        take = min(bucket["remaining"], left)
        view.set(bucket, bucket["remaining"] - take)
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
        if left <= EPS:  # read no further line than needed
            break
    view.tidy()
    return lines


def restore(state: dict[str, Any], lines: list[Line], touched: Touched = None) -> None:
    """Put consumed lines back into their buckets (cancelled reservation, reversed redemption)."""
    view = ledger.of(state)
    for entry in lines:
        bucket = view.find(entry["source_line_id"]) if entry.get("source_line_id") else None
        if bucket is not None:
            view.set(bucket, bucket["remaining"] + entry["amount"])
            _touch(touched, bucket)
            continue
        source = {**entry, "id": entry.get("source_line_id") or entry["id"]}
        source["kind"] = "ACCUMULATION"
        source["remaining"] = entry["amount"]
        view.add(source)
        _touch(touched, source)
    view.tidy()


def expire(state: dict[str, Any], now: int, touched: Touched = None) -> list[Line]:
    """Close every bucket whose expiration date has passed; one EXPIRY line each (per reward,
    soonest first: only the due lines and the first one not due are read)."""
    lines = []
    view = ledger.of(state)
    due = []
    for reward_id in rewards(state):
        first = view.first(reward_id)
        if first is None or first["expiration_date"] is None or first["expiration_date"] > now:
            continue  # nothing due: one (remembered) read
        for bucket in view.ordered(reward_id):
            exp = bucket["expiration_date"]
            if exp is None or exp > now:
                break
            due.append(bucket)
    for bucket in due:
        exp = bucket["expiration_date"]
        if bucket["remaining"] > EPS:
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
            view.set(bucket, 0.0)
            _touch(touched, bucket)
    if lines:
        view.tidy()
    return lines


def next_expiry(state: dict[str, Any]) -> int | None:
    dates = []
    view = ledger.of(state)
    for reward_id in rewards(state):
        first = view.first(reward_id)
        if first is not None and first["expiration_date"] is not None:
            dates.append(first["expiration_date"])
    return min(dates) if dates else None


def reverse_accumulation(
    state: dict[str, Any], entry: Line, event_id: str, now: int, index: int, touched: Touched = None
) -> Line:
    """Take back an accumulation: its own bucket first, then FIFO; a rest is owed (negative)."""
    left = entry["amount"]
    view = ledger.of(state)
    bucket = view.find(entry["id"])
    if bucket is not None:
        take = min(bucket["remaining"], left)
        view.set(bucket, bucket["remaining"] - take)
        left -= take
        _touch(touched, bucket)
    for other in _fifo(state, entry["reward_id"]) if left > EPS else ():
        take = min(other["remaining"], left)
        view.set(other, other["remaining"] - take)
        left -= take
        _touch(touched, other)
        if left <= EPS:
            break
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
        view.add(owed)
        _touch(touched, owed)
    if entry["reward_id"] == POINTS:
        state["lifetime"] -= entry["amount"]
    view.tidy()
    return reversal


def summary(state: dict[str, Any], customer_id: str, touched: Touched = None) -> dict[str, Any]:
    """The `Wallet` record of results and notifications (schemas/wallet.py), of bounded size
    (docs/loyalty.md, "The wallet"): totals per reward and the next expirations, not every open
    line; `lines` are only the open lines this call changed (`touched`), amount = what is left
    (0: closed)."""
    bal, totals = _totals(state)
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


def _totals(state: dict[str, Any]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Balance per reward, and per reward its next EXPIRATIONS_SHOWN expiration dates with the
    amount expiring then (the first lines in expiry order: no more are read), plus what never
    expires (expiration_date null)."""
    view = ledger.of(state)
    totals: list[dict[str, Any]] = []
    for reward in rewards(state):
        for at, total in view.expiring(reward, EXPIRATIONS_SHOWN).items():
            totals.append({"total": total, "reward_id": reward, "expiration_date": at})
        never = view.undated(reward)
        if abs(never) > EPS:
            totals.append({"total": never, "reward_id": reward, "expiration_date": None})
    return view.balance(), totals


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
