"""Every webhook payload, field by field, against the product docs' shapes (masivo-webhooks:
the ten events and their `data`) and docs/loyalty.md's table: one row per webhook, each
produced by driving the engine the way a user would."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas.wallet import as_json as wallet_json
from tests.unit.test_loyalty_engine import DAY, Shop, hooks, program, results

TIERS = {
    "reporting_period_days": 30,
    "levels": [
        {"id": "bronze", "name": "Bronze", "level": 0},
        {"id": "silver", "name": "Silver", "level": 1, "entry": "profile.period_points >= 150"},
    ],
}
PROGRAM = program(
    campaigns=[
        {"id": "base", "condition": "properties.amount > 0", "formula": "100"},
        {"id": "welcome", "triggers": ["REGISTRATION"], "condition": "true", "formula": "25"},
        {
            "id": "cpn",
            "kind": "coupon",
            "formula": "75",
            "coupon": {"codes": ["SAVE75"], "single_use": "per_customer"},
        },
    ],
    tiers=TIERS,
)
REDEEM_40 = [{"reward_id": "POINTS", "amount": 40}]

# The documented data of each webhook: field -> type (None: null allowed, as the docs say).
WALLET = {"customer_id": str, "balance": dict, "points": float, "lifetime": float, "pending": float}
WALLET |= {"reserved": dict, "totals": list, "lines": list, "sequence": int}
LINE = {
    "id": str,
    "amount": float,
    "reward_id": str,
    "campaign_id": str,
    "rule": str,
    "event_id": str,
    "issued_at": int,
    "expiration_date": (int, type(None)),
    "kind": str,
}
CONSUMED = {**LINE, "source_line_id": str}  # lines taken out of an accumulation
TIER = {
    "customer_id": str,
    "from_tier_id": str,
    "to_tier_id": str,
    "from_tier_name": str,
    "to_tier_name": str,
    "from_tier_level": int,
    "to_tier_level": int,
    "triggered_by": str,
    "trigger_event_id": str,
    "trigger_event_type": str,
}
CRON_TIER = {**TIER, "trigger_event_id": type(None), "trigger_event_type": type(None)}
SPEC: dict[str, dict[str, Any]] = {
    "CUSTOMER_REGISTRATION": {"customer_id": str, "customer": dict, "wallet": WALLET},
    "CUSTOMER_ACCUMULATION": {"customer_id": str, "lines": [LINE], "wallet": WALLET},
    "CUSTOMER_REDEMPTION": {"customer_id": str, "lines": [CONSUMED], "wallet": WALLET},
    "REWARDS_RESERVATION": {"customer_id": str, "lines": [CONSUMED], "wallet": WALLET},
    "REWARDS_RESERVATION_CANCELLED": {"customer_id": str, "lines": [CONSUMED], "wallet": WALLET},
    "BEHAVIOR_EVENT_FULFILLED": {"customer_id": str, "event": dict},
    "BEHAVIOR_EVENT_FAILED": {"customer_id": str, "event": dict},
    "COUPON_REDEMPTION": {"customer_id": str, "campaign_id": str, "code": str},
    "TIER_UPGRADE": TIER,
    "TIER_DOWNGRADE": TIER,
    "CUSTOMER_ANONYMOUS_TO_REGISTERED": {
        "customer_id": str,
        "anonymous_id": str,
        "customer": dict,
        "wallet": WALLET,
    },
}


def purchase(shop: Shop, **fields: Any) -> list:
    return shop.send("ann", properties={"amount": 5}, **fields)


def reserved(shop: Shop) -> None:
    purchase(shop)
    purchase(shop, id="order", fulfilled=False, redeem=REDEEM_40)


def upgraded(shop: Shop) -> list:
    purchase(shop)
    return purchase(shop, id="big")  # period_points 200 >= 150


def cancelled(shop: Shop) -> list:
    reserved(shop)
    return shop.command("ann", "CANCEL", "order")


def fulfilled(shop: Shop) -> list:
    reserved(shop)
    return shop.command("ann", "FULFILL", "order")


def redeemed(shop: Shop) -> list:
    purchase(shop)
    return purchase(shop, redeem=REDEEM_40)


def reversed_(shop: Shop) -> list:
    upgraded(shop)
    return shop.command("ann", "REVERSE", "big")


def period_end(shop: Shop) -> list:
    upgraded(shop)
    shop.advance(31 * DAY)  # requalified in the closing period: kept one more period
    return shop.advance(30 * DAY)


def reservation(shop: Shop) -> list:
    purchase(shop)
    return purchase(shop, fulfilled=False, redeem=REDEEM_40)


def identified(shop: Shop) -> list:
    """An anonymous customer (another partition's id in production) becomes ann."""
    shop.command("guest", "REGISTER", anonymous=True, customer={"name": "Guest"})
    shop.send("guest", properties={"amount": 5})
    return shop.send("guest", "IDENTIFY", kind="IDENTIFY", payload={"new_id": "ann"})


# webhook, how a user gets it, what it must hold beyond its shape
CASES: list[tuple[str, Callable[[Shop], list], dict[str, Any]]] = [
    ("CUSTOMER_REGISTRATION", lambda s: s.command("ann", "REGISTER", customer={"name": "Ann"}), {}),
    ("CUSTOMER_ACCUMULATION", purchase, {}),
    ("CUSTOMER_REDEMPTION", redeemed, {}),
    ("REWARDS_RESERVATION", reservation, {}),
    ("REWARDS_RESERVATION_CANCELLED", cancelled, {}),
    ("BEHAVIOR_EVENT_FULFILLED", fulfilled, {}),
    ("BEHAVIOR_EVENT_FAILED", lambda s: purchase(s, redeem=[{"reward_id": "POINTS", "amount": 9}]), {}),
    ("COUPON_REDEMPTION", lambda s: purchase(s, coupon_code="SAVE75"), {"code": "SAVE75"}),
    (
        "TIER_UPGRADE",
        upgraded,
        {"from_tier_id": "bronze", "to_tier_id": "silver", "triggered_by": "EVENT", "trigger_event_id": "big"}
        | {"trigger_event_type": "PURCHASE"},
    ),
    (
        "TIER_DOWNGRADE",
        reversed_,
        {"from_tier_level": 1, "to_tier_level": 0, "triggered_by": "REVERSAL", "trigger_event_id": "big"},
    ),
    ("TIER_DOWNGRADE", period_end, {"to_tier_name": "Bronze", "triggered_by": "CRON_DOWNGRADE"}),
    (
        "CUSTOMER_ANONYMOUS_TO_REGISTERED",
        identified,
        {"anonymous_id": "guest", "customer": {"name": "Guest"}},
    ),
]


def conforms(value: Any, spec: Any, where: str) -> None:
    """`value` has exactly the fields of `spec` (dict), each of its type; [spec]: a list of."""
    if isinstance(spec, dict):
        assert isinstance(value, dict), f"{where}: {value!r} is not an object"
        assert set(value) == set(spec), f"{where}: fields {sorted(value)} != {sorted(spec)}"
        for name, sub in spec.items():
            conforms(value[name], sub, f"{where}.{name}")
    elif isinstance(spec, list):
        assert isinstance(value, list) and value, f"{where}: {value!r} is not a non-empty list"
        for i, item in enumerate(value):
            conforms(item, spec[0], f"{where}[{i}]")
    else:
        ok = isinstance(value, spec) and not (isinstance(value, bool) and spec in (int, float))
        assert ok, f"{where}: {value!r} is not {spec}"


@pytest.mark.parametrize("kind,scenario,expected", CASES, ids=[f"{c[0]}-{c[1].__name__}" for c in CASES])
def test_each_webhook_has_exactly_the_documented_fields_and_types(kind, scenario, expected):
    out = scenario(Shop(PROGRAM))
    (data,) = hooks(out, kind)
    spec = CRON_TIER if expected.get("triggered_by") == "CRON_DOWNGRADE" else SPEC[kind]
    conforms(data, spec, kind)
    assert data["customer_id"] == "ann"
    assert {k: data[k] for k in expected} == expected
    if "event" in data:
        assert data["event"]["customer_id"] == "ann" and isinstance(data["event"]["properties"], dict)
    if "wallet" in data:  # the wallet after the whole call, the one its result shows
        (res,) = [r for r in results(out) if r["customer_id"] == "ann"]  # (a merge: ann's side)
        assert data["wallet"] == wallet_json(res["wallet"])


def test_the_cases_cover_all_eleven_webhooks():
    """Masivo's ten, and CUSTOMER_ANONYMOUS_TO_REGISTERED (its API reference; issue 16)."""
    assert {kind for kind, _, _ in CASES} == set(SPEC) and len(SPEC) == 11


def test_docs_loyalty_md_lists_the_same_fields():
    """docs/loyalty.md's webhook table names exactly the fields sent (lowercase quoted
    names in the DATA column; the uppercase ones are values)."""
    text = (Path(__file__).parents[2] / "docs" / "loyalty.md").read_text()
    table = text.split("## Webhook payloads", 1)[1].split("\n\n", 2)[2]
    documented: dict[str, set[str]] = {}
    for row in re.findall(r"^\| (`[A-Z_`/ ]+`) \| (.+) \|$", table, re.M):
        for kind in re.findall(r"`([A-Z_]+)`", row[0]):
            documented[kind] = set(re.findall(r'"([a-z_]+)"', row[1]))
    assert documented == {kind: set(spec) for kind, spec in SPEC.items()}
