"""Direct points (the ADJUST command): a signed amount of a reward put into or taken out of a
customer's wallet by hand, with the reason on its ledger line.

Payload: {"amount" (signed, non-zero, at most ±1e12), "reward_id", "reason", "actor"}. The
record may come straight from Kafka, so everything ingest checks is checked again here; a
refused adjustment is FAILED with the reason and applies nothing. Adjustments are corrections
of what a customer earned: a credit counts toward lifetime and period points like a campaign's
award, a debit takes them back like a reversal, and the tier is re-checked either way.
"""

from __future__ import annotations

import math
from typing import Any

from processors.loyalty import awards, bounds, profile, tiering, wallet
from processors.loyalty import notifications as n
from processors.loyalty.core import Step
from processors.loyalty.envelope import as_json
from processors.loyalty.output import Output

ADJUSTMENT = "ADJUSTMENT"  # the ledger line kind, the command's event type and its tier trigger
DAY_MS = 86_400_000


def adjustment_error(payload: dict[str, Any], reward_ids: set[str]) -> str | None:
    """Why an ADJUST payload cannot be applied, or None."""
    amount, reward_id, reason = payload.get("amount"), payload.get("reward_id"), payload.get("reason")
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount):
        return f"invalid adjustment: amount must be a finite number, got {amount!r}"
    if amount == 0 or abs(amount) > bounds.MAX_AMOUNT:
        limit = bounds.MAX_AMOUNT
        return f"amount_out_of_range: adjustment of {amount:g} must be non-zero and within ±{limit:g}"
    if not isinstance(reward_id, str) or reward_id not in reward_ids:
        return f"invalid adjustment: reward {reward_id!r} is not defined in the program"
    if not isinstance(reason, str) or not reason.strip():
        return "invalid adjustment: a reason is required"
    return None


def adjust(step: Step, cmd: dict) -> Output:
    payload = as_json(cmd.get("payload"))
    why = adjustment_error(payload, {r.id for r in step.program.rewards})
    if why:
        return step.failed(cmd, why)
    step.expire()  # an expired line must not pay for a debit
    tiering.track(step)
    amount, reward_id = float(payload["amount"]), payload["reward_id"]
    if amount < 0:
        why = wallet.shortfall(step.state, [{"reward_id": reward_id, "amount": -amount}])
    else:
        why = _credit_bound(step, reward_id, amount)
    if why:
        return step.failed(cmd, why)
    detail = _debit(step, cmd, payload) if amount < 0 else _credit_adjustment(step, cmd, payload)
    _retier(step, cmd, amount)
    res = step.result(cmd, "RESOLVED", payload["reason"], **detail)
    step.remember(cmd["id"], res, "RESOLVED")
    return step.finish()


def _credit_bound(step: Step, reward_id: str, amount: float) -> str | None:
    try:
        bounds.check_award(ADJUSTMENT, reward_id, amount, awards.held_balance(step, reward_id))
    except bounds.Refused as exc:
        return exc.reason
    return None


def _credit_adjustment(step: Step, cmd: dict, payload: dict[str, Any]) -> dict[str, Any]:
    """One ADJUSTMENT line, a new open line that expires as the reward's awards do."""
    reward_id, amount = payload["reward_id"], float(payload["amount"])
    reward = next(r for r in step.program.rewards if r.id == reward_id)
    days = reward.expires_after_days
    expires = step.now + days * DAY_MS if days else None
    line = wallet.line(ADJUSTMENT, amount, reward_id, cmd["id"], step.now, 0, expiration_date=expires)
    line["reason"] = payload["reason"]
    wallet.accumulate(step.state, line, step.touched)  # lifetime += amount for POINTS
    step.changed()
    step.out.credited.append(line)
    if reward_id == wallet.POINTS:
        profile.metrics(step.state)["period_points"] += amount
    step.notify(cmd["id"], n.CUSTOMER_ACCUMULATION, n.lines(step.cid, [line]))
    return {"accumulations": [line]}


def _debit(step: Step, cmd: dict, payload: dict[str, Any]) -> dict[str, Any]:
    """ADJUSTMENT lines out of the open lines, oldest-expiring first (as a redemption), each
    with a negative amount: a line's amount is always the change it made to the balance."""
    reward_id, taken = payload["reward_id"], -float(payload["amount"])
    consumed = wallet.consume(step.state, reward_id, taken, cmd["id"], step.now, ADJUSTMENT, step.touched)
    step.changed()
    lines = [{**ln, "amount": -ln["amount"], "reason": payload["reason"]} for ln in consumed]
    if reward_id == wallet.POINTS:
        step.state["lifetime"] -= taken
        profile.metrics(step.state)["period_points"] -= taken
    step.notify(cmd["id"], n.CUSTOMER_REDEMPTION, n.lines(step.cid, lines))
    return {"redemptions": lines}


def _retier(step: Step, cmd: dict, amount: float) -> None:
    """A credit may upgrade at once; a debit may take the customer below their entry."""
    if amount > 0:
        tiering.upgrade(step, cmd)
    else:
        tiering.downgrade(step, ADJUSTMENT, cmd["id"], cmd["type"])
