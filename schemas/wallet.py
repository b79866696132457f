"""The wallet contract: the `loyalty.Wallet` Avro record of results and notifications (v2).

Until v2 the wallet was JSON inside `Result.detail` / `Notification.data`. Three views exist:

- the record (`Wallet` in result.avsc / notification.avsc): what decoders hand out, for records of
  either version (`upgrade`); a line's optional `source_line_id` / `reason` are None when unset;
- the JSON wallet (`as_json`): what webhooks, the synchronous answer and the sink's tables show,
  exactly the JSON of v1 records (an unset optional line field is absent, not null);
- `from_json`: a JSON wallet of any earlier version (v1 records, event records stored before v2)
  as the record.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import is_
from typing import Any

import orjson

Wallet = dict[str, Any]
OPTIONAL_LINE_FIELDS = ("source_line_id", "reason")  # absent from the JSON wallet when None
LINE_FIELDS = ("id", "amount", "reward_id", "campaign_id", "rule", "event_id", "issued_at",
               "expiration_date", "kind", *OPTIONAL_LINE_FIELDS)  # fmt: skip


def as_json(wallet: Wallet | None) -> Wallet | None:
    """The wallet as receivers see it (the v1 JSON): optional line fields only when set."""
    if wallet is None:
        return None
    lines = wallet.get("lines")
    if not lines:
        return wallet
    json_lines = [_json_line(ln) for ln in lines]
    if all(map(is_, json_lines, lines)):
        return wallet
    return {**wallet, "lines": json_lines}


def _json_line(line: dict[str, Any]) -> dict[str, Any]:
    """The line without its unset optional fields (itself when it has none): a C-level copy
    and a delete rather than a comprehension, since the sink does this for every line."""
    out = None
    for k in OPTIONAL_LINE_FIELDS:
        if k in line and line[k] is None:
            if out is None:
                out = dict(line)
            del out[k]
    return line if out is None else out


def from_json(wallet: Any) -> Wallet | None:
    """A JSON wallet of any version as the `Wallet` record (numbers as the schema's types, a
    field older versions lacked at its default); None for anything but an object. A value of
    the wrong type raises TypeError/ValueError: the record is not one the engine wrote."""
    if not isinstance(wallet, dict):
        return None
    sequence = wallet.get("sequence")
    return {
        "customer_id": str(wallet["customer_id"]),
        "balance": _amounts(wallet.get("balance")),
        "points": float(wallet.get("points", 0.0)),
        "lifetime": float(wallet.get("lifetime", 0.0)),
        "pending": float(wallet.get("pending", 0.0)),
        "reserved": _amounts(wallet.get("reserved")),
        "totals": [
            {
                "total": float(t["total"]),
                "reward_id": str(t["reward_id"]),
                "expiration_date": _ms(t.get("expiration_date")),
            }
            for t in wallet.get("totals") or []
        ],
        "lines": [_line(ln) for ln in wallet.get("lines") or []],
        "sequence": None if sequence is None else int(sequence),
    }


def _amounts(value: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in (value or {}).items()}


def _ms(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _line(line: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(line["id"]),
        "amount": float(line["amount"]),
        "reward_id": str(line["reward_id"]),
        "campaign_id": _opt(line.get("campaign_id")),
        "rule": _opt(line.get("rule")),
        "event_id": str(line["event_id"]),
        "issued_at": int(line["issued_at"]),
        "expiration_date": _ms(line.get("expiration_date")),
        "kind": str(line["kind"]),
        "source_line_id": _opt(line.get("source_line_id")),
        "reason": _opt(line.get("reason")),
    }


def lift(record: dict[str, Any], field: str) -> dict[str, Any]:
    """A v1 record (wallet inside the JSON string `field`) in the v2 shape: `wallet` holds the
    record, `field` the rest of the JSON (or `wallet` None when the JSON has no wallet)."""
    if record.get("wallet") is not None:
        return record
    try:
        body = orjson.loads(record[field])
    except orjson.JSONDecodeError:
        return record  # not JSON: left as it was, for the consumer's own check to refuse
    if not isinstance(body, dict) or "wallet" not in body:
        return record
    record["wallet"] = from_json(body.pop("wallet"))
    record[field] = orjson.dumps(body).decode()
    return record


# Superseded schema files (schemas/avro/history/) -> how a record they wrote reaches the current
# in-memory shape, applied by the codec after Avro resolution.
UPGRADES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "result.v1.avsc": lambda record: lift(record, "detail"),
    "notification.v1.avsc": lambda record: lift(record, "data"),
}
