"""Webhook payload builders: the `notifications` records delivery POSTs as {event, data}."""

from __future__ import annotations

from typing import Any

import orjson

from schemas.ids import name_uuid

CUSTOMER_REGISTRATION = "CUSTOMER_REGISTRATION"
CUSTOMER_ACCUMULATION = "CUSTOMER_ACCUMULATION"
CUSTOMER_REDEMPTION = "CUSTOMER_REDEMPTION"
REWARDS_RESERVATION = "REWARDS_RESERVATION"
REWARDS_RESERVATION_CANCELLED = "REWARDS_RESERVATION_CANCELLED"
BEHAVIOR_EVENT_FULFILLED = "BEHAVIOR_EVENT_FULFILLED"
BEHAVIOR_EVENT_FAILED = "BEHAVIOR_EVENT_FAILED"
COUPON_REDEMPTION = "COUPON_REDEMPTION"
TIER_UPGRADE = "TIER_UPGRADE"
TIER_DOWNGRADE = "TIER_DOWNGRADE"
BADGE_AWARDED = "BADGE_AWARDED"
BADGE_REVOKED = "BADGE_REVOKED"
ACHIEVEMENT_PROGRESS = "ACHIEVEMENT_PROGRESS"
CAMPAIGN_BUDGET_EXHAUSTED = "CAMPAIGN_BUDGET_EXHAUSTED"  # once per campaign and budget (budgets.py)
POINTS_EXPIRING = "POINTS_EXPIRING"  # timers.py (armed by notices.py)
TIER_DOWNGRADE_WARNING = "TIER_DOWNGRADE_WARNING"
CUSTOMER_ANONYMOUS_TO_REGISTERED = "CUSTOMER_ANONYMOUS_TO_REGISTERED"  # identity.py, after a merge
# the types that carry the wallet: the Notification's `wallet` field, set by core.Step once the
# whole call is applied (delivery shows it as the last key of `data`)
WITH_WALLET = frozenset(
    {
        CUSTOMER_REGISTRATION,
        CUSTOMER_ACCUMULATION,
        CUSTOMER_REDEMPTION,
        REWARDS_RESERVATION,
        REWARDS_RESERVATION_CANCELLED,
        CUSTOMER_ANONYMOUS_TO_REGISTERED,
    }
)


def notification(
    source_id: str,
    event: str,
    customer_id: str,
    data: dict[str, Any],
    now: int,
    version: int,
    endpoint_id: str | None = None,
) -> dict[str, Any]:
    """A Notification record; its id is stable per (source event, webhook type) so receivers
    can de-duplicate a redelivery. `endpoint_id` pins it to one webhook (a campaign's webhook
    reaction) instead of those subscribed to `event`."""
    note = {
        "id": name_uuid(f"{source_id}:{event}"),
        "event": event,
        "customer_id": customer_id,
        "data": orjson.dumps(data).decode(),
        "created_at": now,
        "config_version": version,
    }
    if endpoint_id is not None:
        note["endpoint_id"] = endpoint_id
    return note


def registration(customer_id: str, customer: dict[str, Any]) -> dict:
    """CUSTOMER_REGISTRATION (with the `wallet`, see WITH_WALLET)."""
    return {"customer_id": customer_id, "customer": customer}


def lines(customer_id: str, entries: list[dict[str, Any]]) -> dict:
    """ACCUMULATION, REDEMPTION, RESERVATION and RESERVATION_CANCELLED (with the `wallet`)."""
    return {"customer_id": customer_id, "lines": entries}


def behavior_event(customer_id: str, event: dict[str, Any]) -> dict:
    """Payload of BEHAVIOR_EVENT_FULFILLED / BEHAVIOR_EVENT_FAILED."""
    return {"customer_id": customer_id, "event": event}


def coupon(customer_id: str, campaign_id: str, code: str) -> dict:
    return {"customer_id": customer_id, "campaign_id": campaign_id, "code": code}
