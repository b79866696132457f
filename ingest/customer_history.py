"""Customer history read from the sink tables: the customer object, its events, its ledger
(each line with why) and its tier changes, newest first, in keyset pages.

A page's cursor is opaque to clients: base64url of JSON [issued_at, id] of the last row shown.
The next page is `(issued_at, id) < cursor` in the order of the (customer_id, issued_at, id)
indexes (migration 0006_history_indexes), so a page costs one index range scan however long
the history is, and rows arriving meanwhile never shift a page (unlike OFFSET).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ingest.consent import consent_object
from ingest.errors import ApiError

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class Page:
    """Filters and position of one page (all filters optional, combined with AND)."""

    limit: int = DEFAULT_LIMIT
    after: tuple[datetime, str] | None = None  # the decoded cursor
    types: list[str] = field(default_factory=list)  # events: type; ledger: kind
    statuses: list[str] = field(default_factory=list)  # events only
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def encode_cursor(at: datetime, row_id: str) -> str:
    raw = orjson.dumps([at.isoformat(), row_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """The (time, id) a cursor names; a cursor this service did not issue is a 422."""
    if cursor is None:
        return None
    try:
        at, row_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        moment = datetime.fromisoformat(at)
        if not isinstance(row_id, str) or moment.tzinfo is None:
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise ApiError(
            422, "bad cursor", fields=[("cursor", "pass next_cursor of the previous page")]
        ) from None
    return moment, row_id


def page_sql(
    select: str, page: Page, time_column: str, id_column: str = "id", type_column: str | None = None
) -> tuple[str, dict[str, Any]]:
    """`select` (ending in FROM ... WHERE customer_id = %(customer_id)s) narrowed to the page;
    one row more than the limit is read to know whether a next page exists."""
    sql, args = [select], {"n": page.limit + 1}
    if page.types and type_column:
        sql.append(f"AND {type_column} = ANY(%(types)s)")
        args["types"] = page.types
    if page.statuses:
        sql.append("AND status = ANY(%(statuses)s)")
        args["statuses"] = page.statuses
    for name, op, value in (("since", ">=", page.since), ("until", "<", page.until)):
        if value is not None:
            sql.append(f"AND {time_column} {op} %({name})s")
            args[name] = value
    if page.after is not None:
        sql.append(f"AND ({time_column}, {id_column}) < (%(at)s, %(after_id)s)")
        args["at"], args["after_id"] = page.after
    sql.append(f"ORDER BY {time_column} DESC, {id_column} DESC LIMIT %(n)s")
    return "\n".join(sql), args


EVENTS_SELECT = """
SELECT id, customer_id, type, kind, path, reference, status, reason, points, result,
       properties, issued_at, received_at, processed_at, config_version
FROM events WHERE customer_id = %(customer_id)s AND issued_at IS NOT NULL
"""
# the line's own event (when it is one: an EXPIRY line's event_id is the expired line's id)
LEDGER_SELECT = """
SELECT l.id, l.event_id, e.type AS event_type, l.kind, l.reward_id, l.campaign_id, l.rule,
       l.amount, l.issued_at, l.expiration_date, l.processed_at, l.line
FROM ledger_lines l LEFT JOIN events e ON e.id = l.event_id
WHERE l.customer_id = %(customer_id)s AND l.issued_at IS NOT NULL
"""
TIERS_SELECT = """
SELECT id, direction, from_tier, to_tier, changed_at, data
FROM tier_changes WHERE customer_id = %(customer_id)s
"""
CUSTOMER_SQL = """
SELECT c.customer_id AS profile_id, c.anonymous, c.identified, c.tier, c.tags, c.consent,
       c.birthday, c.registered_at, c.traits, c.profile, c.updated_at, c.purchase_count,
       c.total_spend, c.last_purchase_at, c.event_count, c.last_event_at, c.first_seen,
       c.lifetime_points, c.points AS profile_points, c.events_by_type,
       w.customer_id AS wallet_id, w.points, w.lifetime, w.pending, w.balance, w.wallet,
       w.tier AS wallet_tier, w.updated_at AS wallet_updated_at
FROM (SELECT %(customer_id)s::text AS customer_id) k
LEFT JOIN customers c ON c.customer_id = k.customer_id
LEFT JOIN wallets w ON w.customer_id = k.customer_id
"""
# metrics from the customers columns (times as ISO 8601) and, for the rest, the profile JSON
METRIC_COLUMNS = ("purchase_count", "total_spend", "last_purchase_at", "event_count", "last_event_at",
                  "first_seen", "lifetime_points", "events_by_type")  # fmt: skip
PERIOD_METRICS = ("period_purchases", "period_spend", "period_points")


def events_sql(page: Page) -> tuple[str, dict[str, Any]]:
    return page_sql(EVENTS_SELECT, page, "issued_at", type_column="type")


def ledger_sql(page: Page) -> tuple[str, dict[str, Any]]:
    return page_sql(LEDGER_SELECT, page, "l.issued_at", "l.id", type_column="l.kind")


def tiers_sql(page: Page) -> tuple[str, dict[str, Any]]:
    return page_sql(TIERS_SELECT, page, "changed_at")


def status_of(row: dict[str, Any]) -> str:
    """ANONYMOUS until identified, REGISTERED once registered, else ACTIVE (known from events)."""
    if row.get("anonymous") and not row.get("identified"):
        return "ANONYMOUS"
    return "REGISTERED" if row.get("registered_at") else "ACTIVE"


def customer_object(
    customer_id: str, row: dict[str, Any], lines: Sequence[dict[str, Any]] = ()
) -> dict[str, Any] | None:
    """Masivo's customer object, `{customer: {id, status, tier_id, consent, metrics, ...},
    wallet: {id, owner_id, lines, totals, ...}}`, from the latest profile (customers), wallet
    (wallets) and open lines (wallet_lines); None when neither profile nor wallet exists."""
    if row.get("profile_id") is None and row.get("wallet_id") is None:
        return None
    profile = row.get("profile") or {}
    rfm = profile.get("rfm") or {}
    customer = {
        "id": customer_id,
        "customer_id": customer_id,
        "status": status_of(row),
        "tier_id": row.get("tier") or row.get("wallet_tier"),
        "is_anonymous": bool(row.get("anonymous")) and not row.get("identified"),
        "anonymous": bool(row.get("anonymous")),
        "identified": row.get("identified"),
        "registration_date": row.get("registered_at"),
        "registered_at": row.get("registered_at"),
        "birthday": row.get("birthday"),
        "tags": row.get("tags") or [],
        "consent": consent_object(customer_id, row.get("consent"), profile.get("consent_record")),
        "traits": row.get("traits") or {},
        "metrics": {**{k: row.get(k) for k in METRIC_COLUMNS}, "points": row.get("profile_points"),
                    **{k: profile.get(k) for k in PERIOD_METRICS}, "rfm": rfm},  # fmt: skip
        "updated_at": row.get("updated_at"),
    }
    return {"customer": customer, "wallet": wallet_summary(row, lines)}


def wallet_summary(row: dict[str, Any], lines: Sequence[dict[str, Any]] = ()) -> dict[str, Any] | None:
    """Masivo's wallet (`id` and `owner_id` are the customer id: one wallet per customer; the
    open `lines` and `totals` with ISO 8601 times) and our balances beside it."""
    if row.get("wallet_id") is None:
        return None
    stored = row.get("wallet") or {}
    return {
        "id": row["wallet_id"],
        "owner_id": row["wallet_id"],
        "lines": [_iso_times(line, ("issued_at", "expiration_date")) for line in lines],
        "points": row["points"],
        "lifetime": row["lifetime"],
        "pending": row["pending"],
        "balance": row.get("balance") or {},
        "reserved": stored.get("reserved", {}),
        "totals": [_iso_times(t, ("expiration_date",)) for t in stored.get("totals", [])],
        "sequence": stored.get("sequence"),
        "updated_at": row.get("wallet_updated_at"),
    }


def _iso_times(item: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A wallet line or total with its epoch-ms times as ISO 8601 (Masivo's format)."""
    out = dict(item)
    for key in keys:
        ms = out.get(key)
        if isinstance(ms, int | float) and not isinstance(ms, bool):
            out[key] = datetime.fromtimestamp(ms / 1000, UTC).isoformat()
    return out


def why(line_row: dict[str, Any]) -> dict[str, Any]:
    """What a ledger line was for, in one object: the campaign and rule that gave it, the event
    that caused it, an adjustment's reason, the expiry date, the line it came out of."""
    line = line_row.get("line") or {}
    kind = line_row.get("kind")
    out = {"kind": kind, "campaign_id": line_row.get("campaign_id"), "rule": line_row.get("rule"),
           "event_id": line_row.get("event_id"), "event_type": line_row.get("event_type"),
           "reason": line.get("reason"), "expiration_date": line_row.get("expiration_date"),
           "source_line_id": line.get("source_line_id")}  # fmt: skip
    if kind == "EXPIRY":  # its event_id is the expired line's id, not an event
        out["event_id"], out["event_type"] = None, None
    return {k: v for k, v in out.items() if v is not None}


def tier_change(row: dict[str, Any]) -> dict[str, Any]:
    data = row.get("data") or {}
    keep = ("from_tier_name", "to_tier_name", "from_tier_level", "to_tier_level", "triggered_by",
            "trigger_event_id", "trigger_event_type")  # fmt: skip
    return {"id": row["id"], "direction": row["direction"], "from_tier_id": row["from_tier"],
            "to_tier_id": row["to_tier"], "changed_at": row["changed_at"],
            **{k: data.get(k) for k in keep}}  # fmt: skip
