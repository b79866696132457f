"""Which endpoints get what: webhooks by notification event type, destinations by event type or
audience id, journey actions by their target. Pure functions over the program and decoded records.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from processors.delivery.policy import tier_of
from schemas.program import Program
from schemas.topics import (
    AUDIENCES_MEMBERSHIP,
    EVENTS_LOYALTY,
    EVENTS_TRACKING,
    JOURNEYS_ACTIVITY,
    NOTIFICATIONS,
)
from schemas.wallet import as_json as wallet_json

BATCH_EVENT = "DESTINATION_BATCH"  # Notification.event of a destination batch (body = data)
JOURNEY_EVENT = "JOURNEY_ACTION"  # default webhook event type of a journey action

INPUT_TOPICS = (  # what delivery reads besides the retry tiers (their topics: policy.tiers)
    NOTIFICATIONS,
    JOURNEYS_ACTIVITY,
    EVENTS_LOYALTY,
    EVENTS_TRACKING,
    AUDIENCES_MEMBERSHIP,
)

Kind = Literal["webhook", "destination"]


@dataclass(frozen=True)
class Endpoint:
    """A delivery target resolved from the program (webhook or destination)."""

    kind: Kind
    id: str
    url: str
    secrets: tuple[str, ...]
    events: frozenset[str]
    enabled: bool = True
    batch_size: int = 1
    linger_ms: int = 0

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"

    def wants(self, names: set[str]) -> bool:
        return not self.events or "*" in self.events or bool(self.events & names)


DESTINATION_TOPICS = frozenset({EVENTS_LOYALTY, EVENTS_TRACKING, AUDIENCES_MEMBERSHIP})  # destinations only


@dataclass(frozen=True, slots=True)
class _Routes:
    """What endpoints() and unrouted() read of one program object, built once per program."""

    program: Program | None
    endpoints: dict[str, Endpoint]  # by key
    destination_enabled: bool  # whether any destination is enabled


_cache = _Routes(None, {}, False)  # replaced whole when the program changes, never mutated


def _routes(program: Program) -> _Routes:
    global _cache
    cache = _cache
    if cache.program is not program:
        found = _build(program)
        enabled = any(e.kind == "destination" and e.enabled for e in found.values())
        cache = _cache = _Routes(program, found, enabled)
    return cache


def endpoints(program: Program) -> dict[str, Endpoint]:
    """All endpoints of a program by key (`webhook:<id>` / `destination:<id>`); cached per
    program object, since the program is swapped, never mutated."""
    return _routes(program).endpoints


def unrouted(program: Program, topic: str) -> bool:
    """Whether no record of logical `topic` can reach an endpoint, so it need not be decoded: an
    event or membership topic while no destination is enabled. Delivery reads those topics to
    keep their offsets moving for a destination added later; decoding and routing each event for
    nothing cost 11.6 us (docs/benchmarks.md#delivery)."""
    if topic not in DESTINATION_TOPICS:
        return False
    return not _routes(program).destination_enabled


def _build(program: Program) -> dict[str, Endpoint]:
    found = [
        Endpoint(
            "webhook",
            w.id,
            w.url,
            tuple(s for s in (w.secret, *w.previous_secrets) if s),
            frozenset(w.events),
            w.enabled,
        )
        for w in program.webhooks
    ] + [
        Endpoint(
            "destination",
            d.id,
            d.url,
            (d.secret,) if d.secret else (),
            frozenset(d.events),
            d.enabled,
            d.batch_size,
            d.linger_ms,
        )
        for d in program.destinations
    ]
    return {e.key: e for e in found}


def endpoint_key(note: dict[str, Any]) -> str | None:
    """The endpoint a fanned-out Notification (retry tier, DLQ, replay) belongs to."""
    if not note.get("endpoint_id"):
        return None
    kind = "destination" if note["event"] == BATCH_EVENT else "webhook"
    return f"{kind}:{note['endpoint_id']}"


def webhook_targets(program: Program, note: dict[str, Any]) -> list[Endpoint]:
    """Enabled webhooks for a Notification: its pinned endpoint, or those wanting its event."""
    all_eps = endpoints(program)
    pinned = endpoint_key(note)
    if pinned:
        ep = all_eps.get(pinned)
        return [ep] if ep else []
    return [
        e
        for e in all_eps.values()
        if e.kind == "webhook" and e.enabled and e.events and e.wants({note["event"]})
    ]


def fan_out(note: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    """The per-endpoint copy of a notification (what goes to retry tiers and the DLQ)."""
    return {**note, "endpoint_id": endpoint.id}


def journey_notification(activity: dict[str, Any]) -> tuple[Kind, dict[str, Any]] | None:
    """A journey ACTION webhook/destination as (kind, Notification); None for other activity.

    `data` JSON may hold "target" (endpoint id), "event" (webhook event type when a string;
    the journeys processor puts the trigger event object there) and "payload"; without
    "payload" the rest of the data object is sent.
    """
    if activity.get("kind") != "ACTION" or activity.get("action") not in ("webhook", "destination"):
        return None
    data = json.loads(activity.get("data") or "{}")
    target = data.get("target")
    event = data["event"] if isinstance(data.get("event"), str) else JOURNEY_EVENT
    rest = {k: v for k, v in data.items() if k != "target" and not (k == "event" and v == event)}
    payload = data["payload"] if isinstance(data.get("payload"), dict) else rest
    payload = {**payload, "journey_id": activity["journey_id"], "customer_id": activity["customer_id"]}
    note = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"journey:{activity['id']}:{target}")),
        "event": event,
        "customer_id": activity["customer_id"],
        "data": json.dumps(payload),
        "created_at": activity["at"],
        "config_version": activity.get("config_version", 0),
        "endpoint_id": target,
        "attempt": 0,
        "not_before": None,
        "last_error": None,
    }
    return activity["action"], note


def destination_item(topic: str, value: dict[str, Any]) -> tuple[set[str], dict[str, Any]] | None:
    """The filter names and JSON item a destination receives for an input record."""
    if topic in (EVENTS_LOYALTY, EVENTS_TRACKING):
        if value.get("kind", "EVENT") != "EVENT":
            return None
        item = {
            "id": value["id"],
            "type": "event",
            "event": value["type"],
            "customer_id": value["customer_id"],
            "issued_at": value["issued_at"],
            "properties": json.loads(value.get("properties") or "{}"),
            "path": value.get("path", "loyalty"),
        }
        return {value["type"]}, item
    if topic == AUDIENCES_MEMBERSHIP:
        item = {
            "id": f"{value['audience_id']}:{value['customer_id']}:{value['action']}:{value['at']}",
            "type": "audience",
            "event": f"AUDIENCE_{value['action']}",
            "audience_id": value["audience_id"],
            "customer_id": value["customer_id"],
            "at": value["at"],
        }
        return {value["audience_id"], item["event"]}, item
    return None


def destination_targets(program: Program, names: set[str]) -> list[Endpoint]:
    return [
        e for e in endpoints(program).values() if e.kind == "destination" and e.enabled and e.wants(names)
    ]


def batch_notification(endpoint: Endpoint, items: list[dict[str, Any]], now_ms: int) -> dict[str, Any]:
    """A destination batch as a Notification; its id is stable for the same items."""
    batch_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{endpoint.id}:" + ",".join(i["id"] for i in items))
    return {
        "id": str(batch_id),
        "event": BATCH_EVENT,
        "customer_id": items[0].get("customer_id", "") if items else "",
        "data": json.dumps({"events": items}),
        "created_at": now_ms,
        "config_version": 0,
        "endpoint_id": endpoint.id,
        "attempt": 0,
        "not_before": None,
        "last_error": None,
    }


def check_notification(note: dict[str, Any]) -> None:
    """Raise now (the record is dead-lettered) rather than when its request body is built,
    where the failure would leave the offset unacknowledged and stall its partition."""
    if note["event"] != BATCH_EVENT:
        json.loads(note["data"])


def request_body(note: dict[str, Any]) -> bytes:
    """Webhooks get {"event", "data"}; a destination batch is sent as its {"events": [...]}.

    A Notification's `wallet` record is shown as the last key of `data`, in its JSON view: the
    body receivers got when the wallet was JSON inside `data` (Notification v1)."""
    if note["event"] == BATCH_EVENT:
        return note["data"].encode()
    data = json.loads(note["data"])
    if note.get("wallet") is not None:
        data["wallet"] = wallet_json(note["wallet"])
    return json.dumps({"event": note["event"], "data": data}).encode()


Job = tuple[str, dict[str, Any]]  # (endpoint key, its fanned-out Notification)
Item = tuple[Endpoint, dict[str, Any]]  # (destination, the item it batches)


def targets(program: Program, topic: str, value: dict[str, Any]) -> tuple[list[Job], list[Item]]:
    """What a decoded record on logical `topic` becomes: webhook jobs and destination items.

    Raises on a record that cannot be routed (a notification whose `data` is not JSON, a journey
    action with bad `data`), so the caller dead-letters it before anything is queued."""
    if topic == NOTIFICATIONS or tier_of(topic) is not None:
        return _notification_jobs(program, value, retried=tier_of(topic) is not None), []
    if topic == JOURNEYS_ACTIVITY:
        return _journey_targets(program, value)
    found = destination_item(topic, value)
    if not found:
        return [], []
    names, item = found
    return [], [(ep, item) for ep in destination_targets(program, names)]


def _notification_jobs(program: Program, note: dict[str, Any], retried: bool) -> list[Job]:
    """A retry is already fanned out and pinned to its endpoint (webhook or destination batch),
    which may since have been disabled or removed: the sender decides. A new notification goes
    to its pinned webhook (a campaign's webhook reaction) or to every enabled one wanting it."""
    check_notification(note)
    key = endpoint_key(note)
    if key and retried:
        return [(key, note)]
    return [(ep.key, fan_out(note, ep)) for ep in webhook_targets(program, note)]


def _journey_targets(program: Program, activity: dict[str, Any]) -> tuple[list[Job], list[Item]]:
    found = journey_notification(activity)
    if not found:
        return [], []
    kind, note = found
    if kind == "webhook":
        return [(ep.key, fan_out(note, ep)) for ep in webhook_targets(program, note)], []
    item = {"id": note["id"], "type": "journey", "event": note["event"]}
    item |= {"customer_id": note["customer_id"], "data": note["data"]}
    dests = destination_targets(program, {note["event"]})
    if note["endpoint_id"]:
        pinned = endpoints(program).get(f"destination:{note['endpoint_id']}")
        dests = [pinned] if pinned and pinned.enabled else []
    return [], [(ep, item) for ep in dests]
