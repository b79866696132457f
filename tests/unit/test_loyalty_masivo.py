"""Masivo's order and product reach the rules (issue 16): the body goes through
schemas.intake.build_event (as ingest and the router build it) into the loyalty engine. And
Masivo's event lifecycle: reversing an unfulfilled event cancels it, the expiry of unfulfilled
events is the program's, every transition's time is kept."""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas.event_types import TypeRegistry
from schemas.intake import build_event
from schemas.program import Program, load_program
from tests.unit.test_loyalty_engine import NOW, Shop, profile, program, result

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


# -- the event lifecycle as Masivo describes it (item 2) --------------------------------------
HOUR = 3_600_000


def reserved(prog, reserve: int | None = None) -> tuple[Shop, str]:
    """ann holds 100 points and has an unfulfilled order reserving 40 of them."""
    shop = Shop(prog)
    shop.send("ann", properties={"amount": 1})
    extra = {"reserve": reserve} if reserve else {}
    out = shop.send("ann", id="order", fulfilled=False, properties={"amount": 1},
                    redeem=[{"reward_id": "POINTS", "amount": 40}], **extra)  # fmt: skip
    assert result(out)["status"] == "PENDING" and result(out)["wallet"]["pending"] == 40
    return shop, "order"


EARN = program(campaigns=[{"id": "base", "condition": "properties.amount > 0", "formula": "100"}])


def test_reversing_an_unfulfilled_event_cancels_it_and_grants_nothing():
    shop, order = reserved(EARN)
    res = result(shop.command("ann", "REVERSE", order, reason="order abandoned"))
    assert (res["event_id"], res["status"], res["reason"]) == (order, "CANCELLED", "order abandoned")
    assert res["points"] == 0 and res["wallet"]["points"] == 100 and res["wallet"]["pending"] == 0
    times = res["detail"]["times"]
    assert times["cancelled_at"] == NOW and times["processing_at"] == NOW and "resolved_at" not in times
    # cancelled for good: no fulfil, no second reversal, no expiry later
    assert result(shop.command("ann", "FULFILL", order))["status"] == "FAILED"
    again = result(shop.command("ann", "REVERSE", order))
    assert again["status"] == "FAILED" and "CANCELLED" in again["reason"]
    assert shop.advance(48 * HOUR) == []


def test_every_transition_time_is_kept():
    shop, order = reserved(EARN)
    shop.driver.advance(HOUR)
    fulfilled = result(shop.command("ann", "FULFILL", order))
    shop.driver.advance(HOUR)
    reversed_ = result(shop.command("ann", "REVERSE", order))
    assert reversed_["status"] == "REVERSED"
    assert reversed_["detail"]["times"] == {
        "processing_at": NOW, "resolved_at": NOW + HOUR, "reversed_at": NOW + 2 * HOUR,
    }  # fmt: skip
    assert fulfilled["detail"]["times"] == {"processing_at": NOW, "resolved_at": NOW + HOUR}


def test_the_program_sets_how_long_an_unfulfilled_event_waits():
    prog = Program.model_validate({**EARN.model_dump(), "fulfilment": {"expire_after_hours": 2}})
    shop, order = reserved(prog)
    assert shop.advance(2 * HOUR - 1) == []
    res = result(shop.advance(1))
    assert (res["event_id"], res["status"]) == (order, "EXPIRED")
    assert res["wallet"]["pending"] == 0 and res["detail"]["times"]["expired_at"] == NOW + 2 * HOUR


def test_an_event_reserve_overrides_the_program_expiry():
    prog = Program.model_validate({**EARN.model_dump(), "fulfilment": {"expire_after_hours": 2}})
    shop, order = reserved(prog, reserve=1)  # one day
    assert shop.advance(23 * HOUR) == []
    assert result(shop.advance(HOUR))["status"] == "EXPIRED"


def test_consent_record_beside_the_purposes():
    """Masivo's consent object: purposes stay the flat map rules read, the rest is kept beside
    them in the profile; what a later PATCH leaves out keeps its value."""
    shop = Shop(EARN)
    at = "2026-01-02T03:04:05+00:00"
    shop.command("ann", "CONSENT", purposes={"email_marketing": False}, vendors={"v1": True},
                 consent_string="CO-1", version="2.0", consent_timestamp=at)  # fmt: skip
    out = shop.command("ann", "CONSENT", purposes={"link_tracking": False}, vendors={"v2": False})
    prof = profile(out)
    assert prof["consent"] == {"email_marketing": False, "link_tracking": False}
    assert prof["consent_record"] == {"consent_string": "CO-1", "version": "2.0",
                                      "consent_timestamp": at,
                                      "vendors": {"v1": True, "v2": False}}  # fmt: skip
    assert "consent_record" not in profile(Shop(EARN).send("bob", properties={"amount": 1}))
