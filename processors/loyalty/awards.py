"""An award becoming a ledger line, or a hold: what every input that runs campaigns (events,
fulfilments, referral rewards, coupon decisions, budget decisions) does with an `Award`.

`hold`: an award of a campaign with a `budget` is not credited at once: it counts toward the
customer's limits, sends BUDGET_RESERVE (key = campaign id) to campaigns.budgets and keeps the
event's result, and the event records it would write, in the customer's state under `HELD`
(they commit with the request, so a crash loses neither; core.Step.result diverts them). Each
BUDGET_DECISION that comes back (decisions.py) credits what was granted (`credit_granted`).
"""

from __future__ import annotations

from typing import Any

from processors.loyalty import badges, bounds, campaigns, profile, wallet
from processors.loyalty import notifications as n
from processors.loyalty.campaigns import Award, rounded
from processors.loyalty.core import DAY_MS, Step
from processors.loyalty.envelope import command, uid
from processors.loyalty.reactions import render
from processors.loyalty.rules import Bindings
from schemas.topics import CAMPAIGN_BUDGETS


def credit(step: Step, event: dict, award: Award, mult: float, index: int) -> dict | None:
    campaign = campaigns.by_id(step.program)[award.campaign_id]
    if campaign.tier_multipliers:
        award.multiplier = mult
    amount = award.amount * award.multiplier
    bounds.check_award(campaign.id, award.reward_id, amount, held_balance(step, award.reward_id))
    amount = rounded(amount, step.program.rounding)
    if amount <= 0:
        return None
    award.amount = amount
    reward = next((r for r in step.program.rewards if r.id == award.reward_id), None)
    days = reward.expires_after_days if reward else None
    exp = step.now + days * DAY_MS if days else None
    line = wallet.line(
        "ACCUMULATION",
        amount,
        award.reward_id,
        event["id"],
        step.now,
        index,
        award.campaign_id,
        award.rule,
        exp,
    )
    wallet.accumulate(step.state, line, step.touched)
    step.changed()
    step.out.credited.append(line)
    campaigns.counted(step.state, step.program, award.campaign_id, event, +1)
    _after_credit(step, event, award)
    return line


def _after_credit(step: Step, event: dict, award: Award) -> None:
    """What a credited award adds besides its line (also for a granted budgeted one)."""
    if award.reward_id == wallet.POINTS:
        profile.metrics(step.state)["period_points"] += award.amount
    if award.kind == "coupon":
        code = award.info.get("code", "")
        step.notify(
            f"{event['id']}:{code}",
            n.COUPON_REDEMPTION,
            n.coupon(step.cid, award.campaign_id, code),
        )


def held_balance(step: Step, reward_id: str) -> float:
    """What a credit adds to, for the balance bound: lifetime points (never below the
    points balance; O(1) on the hot path) or the balance of another reward."""
    if reward_id == wallet.POINTS:
        return step.state["lifetime"]
    return wallet.balance(step.state).get(reward_id, 0.0)


def react(step: Step, event: dict, award: Award, act: Bindings, counted: bool) -> dict[str, Any]:
    """A fired campaign's other reactions: its badge and its webhook call. `counted`: no
    points were credited, so the firing counts toward the per-customer limit here."""
    campaign = campaigns.by_id(step.program)[award.campaign_id]
    out: dict[str, Any] = {}
    if campaign.award_badge is None and campaign.webhook is None:
        return out
    if counted:
        campaigns.counted(step.state, step.program, campaign.id, event, +1)
    if campaign.award_badge is not None:
        badges.campaign_badge(step, event, campaign.id, campaign.award_badge, counted)
        out["badge_id"] = campaign.award_badge
    hook = campaign.webhook
    if hook is not None:
        credited = {
            "id": campaign.id,
            "amount": 0.0 if counted else award.amount,
            "reward_id": award.reward_id,
        }
        binds = Bindings({**act.factories, "campaign": lambda: credited})
        errors: list[str] = []
        payload = render(hook.payload, binds, errors)
        step.notify(f"{event['id']}:{campaign.id}", hook.event, payload, hook.endpoint)
        out["webhook"] = {"endpoint": hook.endpoint, "event": hook.event, "errors": errors}
    return out


def hold(step: Step, event: dict, award: Award, mult: float, slot: int) -> bool:
    """Hold a budgeted award (True) rather than crediting it; False: not budgeted, or
    nothing to credit (the caller credits or skips it as usual)."""
    campaign = campaigns.by_id(step.program)[award.campaign_id]
    if campaign.budget is None:
        return False
    if campaign.tier_multipliers:
        award.multiplier = mult
    amount = award.amount * award.multiplier
    bounds.check_award(campaign.id, award.reward_id, amount, held_balance(step, award.reward_id))
    amount = rounded(amount, step.program.rounding)
    if amount <= 0:
        return False
    award.amount = amount
    key = event["id"]
    entry = step.holds().get(key)
    if entry is None or step.held_key != key:
        entry = {"input_id": step.fresh or key, "event": _stored(event), "waiting": {}, "records": []}
        step.holds()[key] = entry
        step.held_key = key
    entry["waiting"][campaign.id] = {"slot": slot, "award": _award_json(award)}
    campaigns.counted(step.state, step.program, campaign.id, event, +1)  # a hold counts
    cmd = command(
        "BUDGET_RESERVE",
        step.cid,
        event["type"],
        step.now,
        id=uid("budget", campaign.id, key, slot),
        target_event_id=key,
        payload={"campaign_id": campaign.id, "amount": amount},
    )
    step.out.commands.append((CAMPAIGN_BUDGETS, campaign.id, cmd))
    return True


def credit_granted(step: Step, event: dict, award: Award, slot: int) -> dict[str, Any]:
    """Credit a granted (possibly partial) award; its count was taken when it was held."""
    reward = next((r for r in step.program.rewards if r.id == award.reward_id), None)
    days = reward.expires_after_days if reward else None
    exp = step.now + days * 86_400_000 if days else None
    line = wallet.line(
        "ACCUMULATION", award.amount, award.reward_id, event["id"], step.now, slot,
        award.campaign_id, award.rule, exp,
    )  # fmt: skip
    wallet.accumulate(step.state, line, step.touched)
    step.changed()
    step.out.credited.append(line)
    _after_credit(step, event, award)
    return line


def _award_json(award: Award) -> dict[str, Any]:
    return {
        "campaign_id": award.campaign_id,
        "kind": award.kind,
        "reward_id": award.reward_id,
        "amount": award.amount,
        "rule": award.rule,
        "formula": award.formula,
        "multiplier": award.multiplier,
        "info": award.info,
    }


def _stored(event: dict[str, Any]) -> dict[str, Any]:
    """The event as kept while held: what crediting and the campaign's reactions read."""
    return {k: v for k, v in event.items() if k != "metadata"}
