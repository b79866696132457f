"""The wallet in results and webhooks stays the same size however long a customer's history
is (issue 19): totals and the next expirations, not every open line."""

from __future__ import annotations

from processors.delivery.routing import request_body
from processors.loyalty.ledger import customer_lines
from schemas.codec import encode
from tests.unit.test_loyalty_engine import DAY, Shop, program, result

HOUR = DAY // 24
PROGRAM = program(
    rewards=[{"id": "POINTS", "expires_after_days": 365}],  # a year: every line stays open
    campaigns=[{"id": "base", "condition": "properties.amount > 0", "formula": "properties.amount"}],
)


def last_purchase(purchases: int, customer: str) -> list:
    """`purchases` purchases an hour apart; the output of the last one."""
    shop = Shop(PROGRAM)
    out: list = []
    for _ in range(purchases):
        out = shop.send(customer, properties={"amount": 10})
        shop.driver.advance(HOUR)
    return out


def webhook_body(out: list, event: str) -> bytes:
    """The body delivery POSTs: {"event": TYPE, "data": DATA}."""
    (note,) = [v for t, _, v in out if t == "notifications" and v["event"] == event]
    return request_body(note)


def result_bytes(out: list) -> int:
    """The Result record's size on the loyalty.results topic."""
    (res,) = [v for t, _, v in out if t == "loyalty.results"]
    return len(encode("Result", res))


def test_webhook_and_result_sizes_do_not_grow_with_history() -> None:
    few, many = last_purchase(5, "cust-a"), last_purchase(500, "cust-b")
    small, big = webhook_body(few, "CUSTOMER_ACCUMULATION"), webhook_body(many, "CUSTOMER_ACCUMULATION")
    assert len(big) <= 1.2 * len(small), (len(small), len(big))
    sizes = [result_bytes(out) for out in (few, many)]
    assert sizes[1] <= 1.2 * sizes[0], sizes
    wallet = result(many)["wallet"]
    assert wallet["points"] == 5000 and wallet["lifetime"] == 5000 and wallet["sequence"] == 500
    assert [t["total"] for t in wallet["totals"]] == [10.0, 10.0, 10.0]  # the next 3 expirations
    (line,) = wallet["lines"]  # only the line this purchase opened
    assert line["event_id"] == result(many)["event_id"] and line["amount"] == 10


def test_lines_are_the_open_lines_the_event_changed_with_what_is_left() -> None:
    shop = Shop(PROGRAM)
    first = result(shop.send("ann", properties={"amount": 30}))["detail"]["accumulations"][0]
    shop.driver.advance(HOUR)
    second = result(shop.send("ann", properties={"amount": 20}))["detail"]["accumulations"][0]
    shop.driver.advance(HOUR)
    out = shop.send("ann", properties={"amount": 0}, redeem=[{"reward_id": "POINTS", "amount": 40}])
    wallet = result(out)["wallet"]
    left = {ln["id"]: ln["amount"] for ln in wallet["lines"]}
    assert left == {first["id"]: 0.0, second["id"]: 10.0}  # oldest-expiring first; 0 = closed
    assert wallet["totals"] == [
        {"total": 10.0, "reward_id": "POINTS", "expiration_date": second["expiration_date"]}
    ]
    assert [b["id"] for b in customer_lines(shop.driver.store("ledger"), "ann")] == [second["id"]]


def test_a_reservation_shows_as_reserved_per_reward() -> None:
    shop = Shop(PROGRAM)
    shop.send("bob", properties={"amount": 50})
    out = shop.send("bob", fulfilled=False, redeem=[{"reward_id": "POINTS", "amount": 15}])
    wallet = result(out)["wallet"]
    assert wallet["pending"] == 15 and wallet["reserved"] == {"POINTS": 15} and wallet["points"] == 35
