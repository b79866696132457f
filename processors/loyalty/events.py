"""Events (kinds EVENT, REGISTER and SCHEDULED): consent and bounds checks, registration,
redemption or reservation, the campaigns (earn.py) and the tier upgrade."""

from __future__ import annotations

from typing import Any

from processors.loyalty import bounds, dates, earn, tiering, wallet
from processors.loyalty import notifications as n
from processors.loyalty.core import DAY_MS, Step
from processors.loyalty.envelope import as_json, command, public_event, uid
from processors.loyalty.output import Output

HOUR_MS = 3_600_000


def apply_event(step: Step, event: dict[str, Any]) -> Output:
    """An event of the customer (also a SCHEDULED one a timer produced, timers.scheduled_event)."""
    props = as_json(event.get("properties"))
    step.expire()
    if step.state.get("consent", {}).get("behavioral_campaigns") is False:
        reason = "customer has not consented to behavioral_campaigns"
        res = step.result(event, "REJECTED", reason)
        step.remember(event["id"], res, "REJECTED")
        return step.finish()
    out_of_range = bounds.amount_error(props)
    if out_of_range:
        return fail(step, event, out_of_range)
    _track(step, event)
    if event["type"] == "REGISTRATION" or event.get("kind") == "REGISTER":
        _register(step, event)
    why = wallet.shortfall(step.state, event.get("redeem") or [])
    if why:
        return fail(step, event, why)
    if not event.get("fulfilled", True):
        return _reserve(step, event)
    redemptions = _redeem(step, event, event.get("redeem") or [], "REDEMPTION")
    detail = earn.earn(step, event, props)
    tiering.upgrade(step, event)
    if step.welcome:
        data = n.registration(step.cid, step.state["customer"])
        step.notify(event["id"], n.CUSTOMER_REGISTRATION, data)
    res = step.result(event, "RESOLVED", redemptions=redemptions, **detail)
    step.remember(event["id"], res, "RESOLVED")
    return step.finish()


def _track(step: Step, event: dict) -> None:
    """Inactivity is measured from the last real event; its timer is moved lazily (when it
    fires early) rather than on every event."""
    days = step.program.scheduled.inactivity_days
    if days and event.get("kind") != "SCHEDULED" and "inactivity_at" not in step.state:
        at = event["issued_at"] + days * DAY_MS
        step.state["inactivity_at"] = at
        step.out.timers.append((at, f"inactivity:{step.cid}", {"type": "inactivity"}))
    tiering.track(step)


def fail(step: Step, event: dict, reason: str) -> Output:
    res = step.result(event, "FAILED", reason)
    step.notify(event["id"], n.BEHAVIOR_EVENT_FAILED, n.behavior_event(step.cid, public_event(event)))
    step.remember(event["id"], res, "FAILED")
    return step.finish()


def _redeem(step: Step, event: dict, wanted: list[dict], kind: str) -> list[dict]:
    lines: list[dict] = []
    for r in wanted:
        reward, amount = r["reward_id"], r["amount"]
        lines += wallet.consume(step.state, reward, amount, event["id"], step.now, kind, step.touched)
        step.changed()
    if lines and kind == "REDEMPTION":
        step.notify(event["id"], n.CUSTOMER_REDEMPTION, n.lines(step.cid, lines))
    return lines


def _reserve(step: Step, event: dict) -> Output:
    lines = _redeem(step, event, event.get("redeem") or [], "RESERVATION")
    expires = step.now + _hold_ms(step, event)
    step.state["reservations"][event["id"]] = {"lines": lines, "expires_at": expires}
    step.changed()
    if lines:
        step.notify(event["id"], n.REWARDS_RESERVATION, n.lines(step.cid, lines))
    step.out.timers.append(
        (
            expires,
            f"reservation:{event['id']}",
            {"type": "reservation", "event_id": event["id"]},
        )
    )
    res = step.result(event, "PENDING", redemptions=lines, expires_at=expires)
    step.remember(event["id"], res, "PENDING")
    return step.finish()


def _hold_ms(step: Step, event: dict) -> int:
    """How long a reservation waits for its fulfil: the event's `reserve` days, else the
    program's `fulfilment.expire_after_hours` (24 by default)."""
    days = event.get("reserve")
    if days:
        return days * DAY_MS
    return round(step.program.fulfilment.expire_after_hours * HOUR_MS)


def _register(step: Step, event: dict) -> None:
    payload = as_json(event.get("payload"))
    customer = payload.get("customer") or {}
    step.state["customer"] = {**step.state.get("customer", {}), **customer}
    step.state["anonymous"] = bool(payload.get("anonymous", False))
    step.state.setdefault("registered_at", event["issued_at"])
    if customer.get("tags"):
        step.state["tags"] = list(customer["tags"])
    step.welcome = not payload.get("migrated")
    dates.schedule_dates(step)
    codes = {step.cid, customer.get("referral_code")} - {None, ""}
    for code in sorted(codes):
        cmd = command(
            "REFERRAL_CODE",
            step.cid,
            "REGISTRATION",
            step.now,
            id=uid("code", code),
            referral_code=code,
        )
        step.out.commands.append(("loyalty.referrals", code, cmd))
    if event.get("referral_code"):
        cmd = command(
            "REFERRAL_CLAIM",
            step.cid,
            "REGISTRATION",
            step.now,
            id=uid("refclaim", event["referral_code"], step.cid),
            referral_code=event["referral_code"],
            target_event_id=event["id"],
        )
        step.out.commands.append(("loyalty.referrals", event["referral_code"], cmd))
