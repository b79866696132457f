"""Masivo's order and product reach the rules (issue 16): the body goes through
schemas.intake.build_event (as ingest and the router build it) into the loyalty engine."""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas.event_types import TypeRegistry
from schemas.intake import build_event
from schemas.program import load_program
from tests.unit.test_loyalty_engine import NOW, Shop, program, result

EXAMPLE = load_program(Path(__file__).parents[2] / "examples" / "program.yaml")
ORDER = {
    "purchase_id": "p-1",
    "value": 250,
    "discounted_value": 240,
    "payment_method": "CREDIT",
    "products": [
        {"sku": "MUG", "amount": 2, "value": 20, "tags": ["bonus"]},
        {"sku": "BEANS", "value": 230, "tags": []},
        {"sku": "CUP", "tags": ["bonus", "new"]},
    ],
}


def send(shop: Shop, prog, body: dict) -> dict:
    """Build the record from a JSON body exactly as ingest does, then apply it."""
    record = build_event(body, TypeRegistry().of(prog), NOW)
    fields = {k: v for k, v in record.items() if k not in ("customer_id", "type", "properties")}
    fields.pop("payload")
    properties = orjson.loads(record["properties"])
    return result(shop.send(record["customer_id"], record["type"], properties=properties, **fields))


def test_example_program_rewards_order_value_and_tagged_products():
    prog = EXAMPLE.model_copy(update={"version": 1})
    res = send(Shop(prog), prog, {"customer_id": "ann", "type": "PURCHASE", "order": ORDER})
    applied = {r["campaign_id"] for r in res["detail"]["rules_applied"]}
    assert {"purchase-points", "big-order", "bonus-products", "first-purchase"} <= applied
    # amount = order.value (250): 250 + 50, +100 big order, +2 x 25 tagged lines, +100 first
    assert res["points"] == 300 + 100 + 50 + 100


def test_a_body_without_order_never_matches_the_order_rules():
    prog = EXAMPLE.model_copy(update={"version": 1})
    body = {"customer_id": "ann", "type": "PURCHASE", "properties": {"amount": 500}}
    res = send(Shop(prog), prog, body)
    applied = {r["campaign_id"] for r in res["detail"]["rules_applied"]}
    assert not applied & {"big-order", "bonus-products"}


def test_product_sku_and_platform_are_readable():
    prog = program(
        event_types=[{"name": "WISH"}],
        campaigns=[{"id": "sku", "triggers": ["WISH"], "condition": 'product.sku == "MUG" && '
                    'properties.platform == "APP"', "formula": "product.amount * 3"}],
    )
    body = {"customer_id": "ann", "type": "WISH", "platform": "APP", "product": {"sku": "MUG", "amount": 2}}
    assert send(Shop(prog), prog, body)["points"] == 6


def test_order_redeem_levels_are_taken_from_the_wallet():
    prog = program(campaigns=[{"id": "base", "triggers": ["PURCHASE"], "formula": "100"}])
    shop = Shop(prog)
    send(shop, prog, {"customer_id": "ann", "type": "PURCHASE", "properties": {"amount": 1}})
    order = {"value": 10, "redeem": [{"id": "POINTS", "amount": 10}],
             "products": [{"sku": "A", "redeem": [{"id": "POINTS", "amount": 5}]}]}
    body = {"customer_id": "ann", "type": "PURCHASE", "order": order,
            "redeem": [{"reward_id": "POINTS", "amount": 1}]}
    res = send(shop, prog, body)
    assert sum(r["amount"] for r in res["detail"]["redemptions"]) == 16
    assert res["wallet"]["points"] == 100 - 16 + 100
