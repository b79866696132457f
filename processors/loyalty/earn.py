"""Running the program's campaigns for an event (an event now, or a reservation when it is
fulfilled): count it in the profile, credit or hold each award with its reactions, send global
coupon claims, advance achievements. Returns the result's detail."""

from __future__ import annotations

from typing import Any

from processors.loyalty import awards, badges, campaigns, profile, tiers
from processors.loyalty import notifications as n
from processors.loyalty.campaigns import Award, Claim, Skip
from processors.loyalty.core import Step
from processors.loyalty.envelope import command, uid


def earn(step: Step, event: dict, props: dict) -> dict[str, Any]:
    """Count the event, run every triggered campaign and credit the awards."""
    if event.get("kind") != "SCHEDULED":
        profile.record(step.state, event, props)
    # Rules see the profile before this event's rewards: snapshot the few fields they read
    # now (a plain dict, cheap), convert it to CEL only if a rule actually reads it. Credits
    # change only scalars the snapshot copied (balances, period_points), not its objects.
    snapshot = step.rule_profile() if profile.rule_fields(step.program) != {} else None
    act = step.activation(event, props, snapshot)
    applied, skipped, accs = [], [], []
    held = 0  # budgeted awards waiting for their campaign's partition (awards.hold)
    mult = tiers.multiplier(step.program, step.state.get("tier"))
    for outcome in campaigns.evaluate(step.program, event, step.state, act, step.budget):
        if isinstance(outcome, Award):
            if awards.hold(step, event, outcome, mult, len(accs) + held):  # decided elsewhere
                held += 1
                continue
            line = awards.credit(step, event, outcome, mult, len(accs) + held)
            if line:
                accs.append(line)
            reacted = awards.react(step, event, outcome, act, counted=line is None)
            if line or reacted:
                applied.append({**outcome.explain(), **reacted})
        elif isinstance(outcome, Claim):
            _claim(step, event, outcome, props)
            applied.append(
                {
                    "campaign_id": outcome.campaign_id,
                    "kind": "coupon",
                    "code": outcome.code,
                    "pending": "global coupon claim",
                }
            )
        elif isinstance(outcome, Skip):
            skipped.append(
                {
                    "campaign_id": outcome.campaign_id,
                    "reason": outcome.reason,
                    "failed": outcome.failed,
                    **outcome.info,
                }
            )
    progress = badges.achievements(step, event, act)
    if accs:
        step.notify(event["id"], n.CUSTOMER_ACCUMULATION, n.lines(step.cid, accs))
    detail: dict[str, Any] = {"rules_applied": applied, "accumulations": accs, "rules_skipped": skipped}
    if progress:
        detail["achievements"] = progress
    if step.badge_changes:
        detail["badges"] = list(step.badge_changes)
    return detail


def _claim(step: Step, event: dict, claim: Claim, props: dict) -> None:
    cmd = command(
        "COUPON_CLAIM",
        step.cid,
        event["type"],
        step.now,
        id=uid("claim", claim.code, event["id"]),
        coupon_code=claim.code,
        target_event_id=event["id"],
        payload={"campaign_id": claim.campaign_id, "properties": props},
    )
    step.out.commands.append(("coupons.claims", claim.code, cmd))
