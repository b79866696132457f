"""Topic records -> table rows: pure functions, no database.

Each input record becomes zero or more (target, row) pairs; a target is one staged upsert
(see sinks.tables). Values are defensive: a field of an unexpected shape becomes NULL instead
of stopping the sink, because one odd record must never block the stream behind it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas import event_times
from schemas import topics as t
from schemas.wallet import as_json as wallet_json

Row = dict[str, Any]


@dataclass(slots=True)
class Source:
    """Where a record came from: the logical topic, its coordinates and its Kafka timestamp.

    Not frozen: one is made per consumed record, and a frozen dataclass's __init__ (an
    object.__setattr__ per field) costs about four times as much. Nothing changes one."""

    topic: str
    partition: int = 0
    offset: int = 0
    timestamp: int = 0
    # the record's Kafka (key, value) bytes, kept so a reject can go to sink.dlq as it came;
    # referenced (not copied) until the batch commits. None: not known (tests, benchmarks)
    original: tuple[bytes | None, bytes | None] | None = field(default=None, repr=False, compare=False)


_TIMES: dict[int, datetime] = {}  # epoch ms -> datetime: a record's times recur in its rows


def ts(value: Any) -> datetime | None:
    """Epoch ms (or an ISO-8601 string) -> aware datetime; anything else -> None."""
    if type(value) is int:  # the usual case, cached (not bool: a subclass of int)
        found = _TIMES.get(value)
        if found is None:
            if len(_TIMES) >= 100_000:
                _TIMES.clear()
            found = _TIMES[value] = datetime.fromtimestamp(value / 1000, UTC)
        return found
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def num(value: Any) -> float | None:
    if type(value) is float:  # the usual case (Avro doubles): no isinstance checks
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def loads(text: str | None) -> Any:
    """Parse a JSON string field; invalid JSON is kept as a string rather than dropped."""
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def sequence(state: Row) -> int | None:
    """The loyalty processor's per-customer counter (absent in records of older versions)."""
    value = state.get("sequence")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def name_of(value: Any) -> str | None:
    """A tier (or similar) given as a string or as an object with id/name."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        found = value.get("id") or value.get("name") or value.get("tier")
        return None if found is None else str(found)
    return str(value)


def event_rows(ev: Row, src: Source) -> list[tuple[str, Row]]:
    """An Event (loyalty or tracking): status PENDING until its result arrives."""
    tracking = src.topic == t.EVENTS_TRACKING or ev.get("path") == "tracking"
    row = {
        "id": ev["id"],
        "customer_id": ev["customer_id"],
        "type": ev["type"],
        "kind": ev.get("kind") or "EVENT",
        "path": "tracking" if tracking else ev.get("path") or "loyalty",
        "reference": ev.get("reference"),
        "brand_id": ev.get("brand_id"),
        "status": "TRACKED" if tracking else "PENDING",
        "properties": ev.get("properties") or "{}",
        "tags": _tags(ev.get("tags")),
        "metadata": ev.get("metadata") or "{}",
        "fulfilled": ev.get("fulfilled", True),
        "target_event_id": ev.get("target_event_id"),
        "issued_at": ts(ev.get("issued_at")),
        "received_at": ts(ev.get("received_at")),
        "sends": 1,
    }
    return [("events_from_event", row)]


def _tags(tags: Any) -> str | None:
    return dumps(tags) if tags else "[]"  # most events have none: no dumps


def loyalty_event_rows(ev: Row, src: Source) -> list[tuple[str, Row]]:
    """An events.loyalty record; a BUDGET_DECISION also gives its campaign's budget use. A
    DRY_RUN (processors/loyalty/dry_run.py) is a question, not an event: no row."""
    if ev.get("kind") == "DRY_RUN":
        return []
    out = event_rows(ev, src)
    budget = _campaign_budget(ev) if ev.get("kind") == "BUDGET_DECISION" else None
    if budget is not None:
        out.append(("campaign_budgets", budget))
    return out


def _campaign_budget(ev: Row) -> Row | None:
    """The campaign's spend after this decision (processors/loyalty/budgets.py): `spent` is the
    exact total over every partition, so the highest one is the latest (sinks.tables)."""
    d = loads(ev.get("payload"))
    if not isinstance(d, dict) or not d.get("campaign_id"):
        return None  # not a decision's shape: its events row is still written
    budget, spent = num(d.get("budget")), num(d.get("spent")) or 0.0
    return {
        "campaign_id": str(d["campaign_id"]),
        "reward_id": d.get("reward_id") if isinstance(d.get("reward_id"), str) else None,
        "budget": budget,
        "spent": spent,
        "remaining": None if budget is None else max(budget - spent, 0.0),
        "exhausted_at": ts(d.get("exhausted_at")),
        "updated_at": ts(ev.get("issued_at")),
    }


# result detail keys holding the ledger lines a result created (EXPIRY: points expiry timer,
# REVERSAL: a reversed event's accumulations taken back, MERGE_OUT / MERGE_IN: the lines an
# anonymous customer's merge moved, processors/loyalty/identity.py)
LEDGER_KEYS = ("accumulations", "redemptions", "expirations", "reversals", "transfers")


def result_rows(res: Row, src: Source) -> list[tuple[str, Row]]:
    """A Result: the event's status and summary, its ledger lines and the wallet after it.

    The wallet is the Result's `wallet` record (a v1 record's JSON wallet is lifted there by the
    codec), stored in its JSON view (schemas/wallet.py), the shape webhooks show. A duplicate
    (re-emitted first result of a repeated event id) carries nothing new and an old wallet, so
    it is skipped entirely.
    """
    detail = loads(res.get("detail")) or {}
    if not isinstance(detail, dict):
        detail = {}
    if detail.get("duplicate"):
        return []
    processed = ts(res.get("processed_at"))
    wallet = wallet_json(res.get("wallet"))
    out = [("events_from_result", _event_from_result(res, detail, wallet, processed))]
    for key in LEDGER_KEYS:
        for line in detail.get(key) or []:
            if isinstance(line, dict) and line.get("id"):
                out.append(("ledger_lines", _ledger_line(line, res, processed)))
    if isinstance(wallet, dict):
        for line in wallet.get("lines") or []:  # the open lines this result changed
            if isinstance(line, dict) and line.get("id"):
                out.append(("wallet_lines", _wallet_line(line, res, wallet, processed)))
        out.append(("wallets", _wallet(wallet, res, detail, processed)))
    for change in detail.get("badges") or []:  # badges awarded or revoked by this result
        if isinstance(change, dict) and change.get("badge_id"):
            out.append(("customer_badges", _badge(change, res, wallet, processed)))
    return out


def _event_from_result(res: Row, detail: Row, wallet: Row | None, processed: datetime | None) -> Row:
    ev = detail.get("event") if isinstance(detail.get("event"), dict) else {}
    summary = dict(detail)  # every key in its order but the event and the wallet
    summary.pop("event", None)
    summary.pop("wallet", None)
    if isinstance(wallet, dict):
        summary["wallet"] = without_lines = dict(wallet)
        without_lines.pop("lines", None)
    summary.update(
        status=res["status"],
        reason=res.get("reason"),
        points=res.get("points", 0),
        processed_at=res.get("processed_at"),
        config_version=res.get("config_version", 0),
    )
    props = ev.get("properties")
    return {
        **_times(res["status"], res.get("processed_at"), processed, detail.get("times")),
        "id": res["event_id"],
        "customer_id": res["customer_id"],
        "type": res["type"],
        "kind": res.get("kind") or "EVENT",
        "path": "loyalty",
        "reference": ev.get("reference"),
        "brand_id": ev.get("brand_id"),
        "status": res["status"],
        "reason": res.get("reason"),
        "points": res.get("points", 0),
        "result": dumps(summary),
        "properties": props if isinstance(props, str) else dumps(props),
        "target_event_id": ev.get("target_event_id"),
        "issued_at": ts(ev.get("issued_at")),
        "received_at": ts(ev.get("received_at")),
        "processed_at": processed,
        "config_version": res.get("config_version", 0),
    }


_FIRST_TIMES: dict[str | None, dict[str, Any]] = {}  # status -> a first result's time columns


def _times(status: str | None, processed_at: Any, processed: datetime | None, times: Any) -> Row:
    """Every time column (schemas/event_times.py `of`) as datetimes. A first result (no
    `times`, the usual case) sets the columns its status sets, each to `processed`: which
    ones is looked up once per status instead of built and converted per record."""
    if isinstance(times, dict) and times or processed_at is None:
        return {name: ts(at) for name, at in event_times.of(status, processed_at, times).items()}
    template = _FIRST_TIMES.get(status)
    if template is None:
        template = event_times.of(status, 0, None)
        if len(_FIRST_TIMES) < 100:  # statuses are a few; an odd record's is not kept
            _FIRST_TIMES[status] = template
    return {name: None if at is None else processed for name, at in template.items()}


def _ledger_line(line: Row, res: Row, processed: datetime | None) -> Row:
    return {
        "id": str(line["id"]),
        "customer_id": res["customer_id"],
        "event_id": line.get("event_id") or res["event_id"],
        "kind": line.get("kind"),
        "reward_id": line.get("reward_id"),
        "campaign_id": line.get("campaign_id"),
        "rule": line.get("rule"),
        "amount": num(line.get("amount")) or 0.0,
        "issued_at": ts(line.get("issued_at")),
        "expiration_date": ts(line.get("expiration_date")),
        "processed_at": processed,
        "line": dumps(line),
    }


def _badge(change: Row, res: Row, wallet: Any, processed: datetime | None) -> Row:
    """A customer's badge after an award or a revocation (count 0: no longer held)."""
    revoked = change.get("action") == "REVOKED"
    count = change.get("count") if isinstance(change.get("count"), int) else 0
    return {
        "customer_id": res["customer_id"],
        "badge_id": str(change["badge_id"]),
        "badge_name": change.get("badge_name"),
        "count": count,
        "first_awarded_at": ts(change.get("first_awarded_at")),
        "awarded_at": ts(change.get("awarded_at")),
        "revoked_at": ts(change.get("at")) if revoked else None,
        "trigger_event_id": change.get("trigger_event_id"),
        "trigger_event_type": change.get("trigger_event_type"),
        "achievement_id": change.get("achievement_id"),
        "campaign_id": change.get("campaign_id"),
        "sequence": sequence(wallet) if isinstance(wallet, dict) else None,
        "updated_at": processed,
    }


def _wallet_line(line: Row, res: Row, wallet: Row, processed: datetime | None) -> Row:
    """A line's state in the wallet after this result (`amount` = what is left, 0 = closed)."""
    return {
        "id": str(line["id"]),
        "customer_id": res["customer_id"],
        "kind": line.get("kind"),
        "reward_id": line.get("reward_id"),
        "campaign_id": line.get("campaign_id"),
        "event_id": line.get("event_id"),
        "amount": num(line.get("amount")) or 0.0,
        "issued_at": ts(line.get("issued_at")),
        "expiration_date": ts(line.get("expiration_date")),
        "line": dumps(line),
        "sequence": sequence(wallet),
        "updated_at": processed,
    }


def _wallet(wallet: Row, res: Row, detail: Row, processed: datetime | None) -> Row:
    return {
        "customer_id": res["customer_id"],
        "points": num(wallet.get("points")) or 0.0,
        "lifetime": num(wallet.get("lifetime")) or 0.0,
        "pending": num(wallet.get("pending")) or 0.0,
        "balance": dumps(wallet.get("balance") or {}),
        "wallet": dumps(wallet),
        "tier": name_of(detail.get("tier")),
        "event_id": res["event_id"],
        "updated_at": processed,
        "sequence": sequence(wallet),
    }


def profile_rows(prof: Row, src: Source) -> list[tuple[str, Row]]:
    """A Profile change: the customer's current metrics, RFM and the flat profile JSON."""
    p = loads(prof.get("profile")) or {}
    if not isinstance(p, dict):
        p = {}
    rfm = p.get("rfm") if isinstance(p.get("rfm"), dict) else {}
    score = rfm.get("score")
    row = {
        "customer_id": prof["customer_id"],
        "anonymous": bool(p.get("anonymous", prof.get("anonymous", False))),
        "identified": p.get("identified") if isinstance(p.get("identified"), bool) else None,
        "tier": name_of(prof.get("tier") or p.get("tier")),
        "tags": dumps(p.get("tags")),
        "consent": dumps(p.get("consent")),
        "purchase_count": num(p.get("purchase_count")),
        "total_spend": num(p.get("total_spend")),
        "last_purchase_at": ts(p.get("last_purchase_at")),
        "event_count": num(p.get("event_count")),
        "last_event_at": ts(p.get("last_event_at")),
        "first_seen": ts(p.get("first_seen")),
        "lifetime_points": num(p.get("lifetime_points")),
        "points": num(p.get("points")),
        "birthday": None if p.get("birthday") is None else str(p.get("birthday")),
        "registered_at": ts(p.get("registered_at")),
        "rfm_recency": num(rfm.get("recency")),
        "rfm_frequency": num(rfm.get("frequency")),
        "rfm_monetary": num(rfm.get("monetary")),
        "rfm_score": None if score is None else str(score),
        "events_by_type": dumps(p.get("events_by_type")),
        "traits": dumps(p.get("traits")),
        "profile": dumps(p),
        "config_version": prof.get("config_version", 0),
        "updated_at": ts(prof.get("updated_at")),
        "sequence": sequence(p),
        "merged_into": p.get("merged_into") if isinstance(p.get("merged_into"), str) else None,
    }
    return [("customers", row)]


TIER_EVENTS = {"TIER_UPGRADE": "UPGRADE", "TIER_DOWNGRADE": "DOWNGRADE"}


def notification_rows(n: Row, src: Source) -> list[tuple[str, Row]]:
    """Every notification (optional table); tier webhooks also become tier_changes."""
    created = ts(n.get("created_at"))
    out = [
        (
            "notifications",
            {
                "id": n["id"],
                "event": n["event"],
                "customer_id": n["customer_id"],
                "data": n.get("data") or "{}",
                "created_at": created,
                "config_version": n.get("config_version", 0),
            },
        )
    ]
    direction = TIER_EVENTS.get(n["event"])
    if direction:
        data = loads(n.get("data"))
        out.append(("tier_changes", _tier_change(n, direction, data, created)))
    return out


def _first(data: Row, *keys: str) -> Any:
    for key in keys:
        if data.get(key) is not None:
            return data[key]
    return None


def _tier_change(n: Row, direction: str, data: Any, created: datetime | None) -> Row:
    data = data if isinstance(data, dict) else {}
    return {
        "id": n["id"],
        "customer_id": n["customer_id"],
        "direction": direction,
        "from_tier": name_of(_first(data, "from_tier_id", "from_tier", "previous_tier", "from")),
        "to_tier": name_of(_first(data, "to_tier_id", "to_tier", "new_tier", "tier", "to")),
        "changed_at": ts(_first(data, "changed_at", "at")) or created,
        "data": dumps(data),
    }


def membership_rows(m: Row, src: Source) -> list[tuple[str, Row]]:
    """ENTER/LEAVE: the history row (id derived from content) and the current-state change."""
    at = ts(m.get("at"))
    key = f"{m['audience_id']}:{m['customer_id']}:{m['action']}:{m.get('at')}"
    history = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, key)),
        "audience_id": m["audience_id"],
        "customer_id": m["customer_id"],
        "action": m["action"],
        "reason": m.get("reason"),
        "at": at,
        "config_version": m.get("config_version", 0),
    }
    current = {
        "audience_id": m["audience_id"],
        "customer_id": m["customer_id"],
        "action": m["action"],
        "entered_at": at,
        "reason": m.get("reason"),
        "config_version": m.get("config_version", 0),
    }
    return [("audience_membership_events", history), ("audience_members", current)]


JOURNEY_STATUS = {"ENTER": "ACTIVE", "EXIT": "EXITED", "COMPLETE": "COMPLETED"}


def journey_rows(a: Row, src: Source) -> list[tuple[str, Row]]:
    """A journey activity: the transition history row and the instance's current state."""
    at = ts(a.get("at"))
    status = JOURNEY_STATUS.get(a["kind"])
    ended = at if status in ("EXITED", "COMPLETED") else None
    transition = {
        "id": a["id"],
        "journey_id": a["journey_id"],
        "instance_id": a["instance_id"],
        "customer_id": a["customer_id"],
        "kind": a["kind"],
        "from_node": a.get("from_node"),
        "to_node": a.get("to_node"),
        "action": a.get("action"),
        "trigger_event_id": a.get("trigger_event_id"),
        "at": at,
        "config_version": a.get("config_version", 0),
        "data": a.get("data") or "{}",
    }
    instance = {
        "instance_id": a["instance_id"],
        "journey_id": a["journey_id"],
        "customer_id": a["customer_id"],
        "status": status,
        "current_node": a.get("to_node") if a["kind"] != "ACTION" else None,
        "trigger_event_id": a.get("trigger_event_id") if a["kind"] == "ENTER" else None,
        "entered_at": at if a["kind"] == "ENTER" else None,
        "ended_at": ended,
        "updated_at": at,
    }
    return [("journey_transitions", transition), ("journey_instances", instance)]


def delivery_rows(d: Row, src: Source) -> list[tuple[str, Row]]:
    row = {
        "webhook_id": d["webhook_id"],
        "endpoint_id": d["endpoint_id"],
        "attempt": d["attempt"],
        "event": d["event"],
        "customer_id": d["customer_id"],
        "status_code": d.get("status_code"),
        "latency_ms": d.get("latency_ms"),
        "outcome": d["outcome"],
        "error": d.get("error"),
        "at": ts(d.get("at")),
    }
    return [("webhook_deliveries", row)]


def dlq_rows(n: Row, src: Source) -> list[tuple[str, Row]]:
    row = {
        "id": n["id"],
        "endpoint_id": n.get("endpoint_id") or "",
        "event": n["event"],
        "customer_id": n["customer_id"],
        "data": n.get("data") or "{}",
        "created_at": ts(n.get("created_at")),
        "attempt": n.get("attempt", 0),
        "last_error": n.get("last_error"),
        "config_version": n.get("config_version", 0),
        "dead_at": ts(src.timestamp) if src.timestamp else None,
    }
    return [("dlq", row)]


def audit_rows(a: Row, src: Source) -> list[tuple[str, Row]]:
    """An admin write (ingest/history.py): one admin_audit row, secrets already masked."""
    row = {
        "id": a["id"],
        "at": ts(a.get("at")),
        "actor": a["actor"],
        "action": a["action"],
        "resource": a["resource"],
        "version_before": a.get("version_before"),
        "version_after": a.get("version_after"),
        "summary": a.get("summary"),
        "changes": a.get("changes") or "[]",
    }
    return [("admin_audit", row)]


MAPPERS = {
    t.EVENTS_LOYALTY: loyalty_event_rows,
    t.EVENTS_TRACKING: event_rows,
    t.LOYALTY_RESULTS: result_rows,
    t.PROFILES_CHANGES: profile_rows,
    t.NOTIFICATIONS: notification_rows,
    t.AUDIENCES_MEMBERSHIP: membership_rows,
    t.JOURNEYS_ACTIVITY: journey_rows,
    t.DELIVERIES: delivery_rows,
    t.DELIVERY_DLQ: dlq_rows,
    t.ADMIN_AUDIT: audit_rows,
}
SOURCE_TOPICS: tuple[str, ...] = tuple(MAPPERS)


def rows_for(value: Row, src: Source) -> list[tuple[str, Row]]:
    """All (target, row) pairs one decoded record contributes."""
    return MAPPERS[src.topic](value, src)
