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


def notification(
    source_id: str, event: str, customer_id: str, data: dict[str, Any], now: int, version: int
) -> dict[str, Any]:
    """A Notification record; its id is stable per (source event, webhook type) so receivers
    can de-duplicate a redelivery."""
    return {
        "id": name_uuid(f"{source_id}:{event}"),
        "event": event,
        "customer_id": customer_id,
        "data": orjson.dumps(data).decode(),
        "created_at": now,
        "config_version": version,
    }


def registration(customer_id: str, customer: dict[str, Any], wallet: dict[str, Any]) -> dict:
    return {"customer_id": customer_id, "customer": customer, "wallet": wallet}


def lines(customer_id: str, entries: list[dict[str, Any]], wallet: dict[str, Any]) -> dict:
    """Payload of ACCUMULATION, REDEMPTION, RESERVATION and RESERVATION_CANCELLED."""
    return {"customer_id": customer_id, "lines": entries, "wallet": wallet}


def behavior_event(customer_id: str, event: dict[str, Any]) -> dict:
    """Payload of BEHAVIOR_EVENT_FULFILLED / BEHAVIOR_EVENT_FAILED."""
    return {"customer_id": customer_id, "event": event}


def coupon(customer_id: str, campaign_id: str, code: str) -> dict:
    return {"customer_id": customer_id, "campaign_id": campaign_id, "code": code}
