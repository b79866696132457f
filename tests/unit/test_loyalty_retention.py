"""Bounded state: the `events` store keeps a record `retention.events_days` (issue 19); after
that a repeated id counts as new and a reversal is refused with the reason."""

from __future__ import annotations

from processors.loyalty.retention import SINCE
from tests.unit.test_loyalty_engine import BASE, DAY, Shop, program, result

PROGRAM = program(campaigns=[{**BASE, "formula": "100"}], retention={"events_days": 30})


def keys(shop: Shop) -> list[str]:
    return sorted(shop.driver.store("events"))


def test_the_record_and_its_index_are_deleted_after_the_window() -> None:
    shop = Shop(PROGRAM)
    shop.send("ann", id="order", properties={"amount": 1})
    assert "order" in keys(shop) and any(k.startswith(SINCE) for k in keys(shop))
    shop.driver.advance(29 * DAY)
    assert "order" in keys(shop)  # inside the window
    shop.driver.advance(DAY + 3_600_000)  # past it, and the hourly sweep has run
    assert keys(shop) == []
    again = result(shop.send("ann", id="order", properties={"amount": 1}))
    assert again["status"] == "RESOLVED" and not again["detail"]["duplicate"]  # counts as new
    assert again["wallet"]["lifetime"] == 200


def test_a_reversal_past_the_window_is_refused_with_its_reason() -> None:
    shop = Shop(PROGRAM)
    shop.send("ann", id="order", properties={"amount": 1})
    shop.driver.advance(30 * DAY - 60_000)  # the sweep runs: not due yet
    shop.driver.advance(60_000)  # due now, the next sweep is later: refused all the same
    assert "order" in keys(shop)
    late = result(shop.command("ann", "REVERSE", "order"))
    assert (late["status"], late["reason"]) == (
        "FAILED",
        "event order is older than the 30-day retention window",
    )
    shop.driver.advance(3_600_000)
    assert "order" not in keys(shop)
    gone = result(shop.command("ann", "REVERSE", "order"))
    assert gone["status"] == "FAILED" and "older than the 30-day retention window" in gone["reason"]
    assert gone["wallet"]["points"] == 100  # nothing taken back


def test_a_reversal_inside_the_window_still_works() -> None:
    shop = Shop(PROGRAM)
    shop.send("ann", id="order", properties={"amount": 1})
    shop.driver.advance(29 * DAY)
    assert result(shop.command("ann", "REVERSE", "order"))["status"] == "REVERSED"


def test_an_open_reservation_outlives_the_window() -> None:
    shop = Shop(PROGRAM)
    shop.send("bob", properties={"amount": 1})
    shop.send("bob", id="hold", fulfilled=False, reserve=60, redeem=[{"reward_id": "POINTS", "amount": 10}])
    shop.driver.advance(31 * DAY)
    assert shop.driver.store("events")["hold"]["status"] == "PENDING"
    assert result(shop.command("bob", "FULFILL", "hold"))["status"] == "RESOLVED"


def test_the_default_window_is_120_days() -> None:
    assert program().retention.events_days == 120
