"""Commands that come back from the code partitions (codes.py): a referral reward and a
global coupon's decision (COUPON_GRANTED / COUPON_REJECTED). The claims sent there are earn.py's
and events.py's."""

from __future__ import annotations

from typing import Any

from processors.loyalty import awards, campaigns, tiering, tiers
from processors.loyalty import notifications as n
from processors.loyalty.campaigns import Award, Skip
from processors.loyalty.core import Step
from processors.loyalty.envelope import as_json
from processors.loyalty.output import Output


def referral_reward(step: Step, cmd: dict) -> Output:
    payload = as_json(cmd.get("payload"))
    role = payload.get("role", "referrer")
    accs, applied = [], []
    held = 0
    for c in step.program.campaigns:
        if c.kind != "referral" or not c.enabled or not c.referral:
            continue
        amount = c.referral.referrer_points if role == "referrer" else c.referral.referee_points
        if amount <= 0 or campaigns.eligible_dates(c, cmd) or _limited(step, c, cmd):
            continue
        award = Award(
            c.id,
            "referral",
            c.reward_id,
            amount,
            f"referral:{role}",
            str(amount),
            info={"role": role, "referee": payload.get("referee")},
        )
        mult = tiers.multiplier(step.program, step.state.get("tier"))
        if awards.hold(step, cmd, award, mult, len(accs) + held):  # budgeted: decided on its partition
            held += 1
            continue
        line = awards.credit(step, cmd, award, mult, len(accs) + held)
        if line:
            accs.append(line)
            applied.append(award.explain())
    if accs:
        step.notify(cmd["id"], n.CUSTOMER_ACCUMULATION, n.lines(step.cid, accs))
    tiering.upgrade(step, cmd)
    res = step.result(cmd, "RESOLVED", rules_applied=applied, accumulations=accs)
    step.remember(cmd["id"], res, "RESOLVED")
    return step.finish()


def _limited(step: Step, c: Any, cmd: dict) -> bool:
    count = step.state.get("campaigns", {}).get(c.id, {}).get("count", 0)
    over = c.per_customer_limit is not None and count >= c.per_customer_limit
    return over or bool(campaigns.period_capped(c, cmd, step.state)) or step.budget.exhausted(c)


def coupon_decision(step: Step, cmd: dict) -> Output:
    payload = as_json(cmd.get("payload"))
    campaign = next((c for c in step.program.campaigns if c.id == payload.get("campaign_id")), None)
    code = cmd.get("coupon_code") or ""
    if cmd["kind"] == "COUPON_REJECTED" or campaign is None:
        step.result(cmd, "REJECTED", payload.get("reason") or "coupon not available")
        return step.finish()
    act = step.activation(cmd, payload.get("properties") or {})
    outcome = campaigns.formula_award(campaign, act, {"code": code})
    if isinstance(outcome, Skip):
        step.result(cmd, "FAILED", outcome.reason)
        return step.finish()
    mult = tiers.multiplier(step.program, step.state.get("tier"))
    held = awards.hold(step, cmd, outcome, mult, 0)  # a budgeted coupon: decided on its partition
    line = None if held else awards.credit(step, cmd, outcome, mult, 0)
    accs = [line] if line else []
    if accs:
        step.notify(cmd["id"], n.CUSTOMER_ACCUMULATION, n.lines(step.cid, accs))
    tiering.upgrade(step, cmd)
    applied = [] if held else [outcome.explain()]
    res = step.result(cmd, "RESOLVED", rules_applied=applied, accumulations=accs)
    step.remember(cmd["id"], res, "RESOLVED")
    return step.finish()
