"""One moment per call: every wallet a call shows (its result, each webhook) is the wallet after
the whole call, and the customer's `sequence` orders wallets and profiles without wall clocks."""

from __future__ import annotations

from typing import Any

import orjson

from schemas.wallet import as_json as wallet_json
from tests.unit.test_loyalty_engine import BASE, DAY, Shop, hooks, program, result

POINTS_10 = program(
    rewards=[{"id": "POINTS", "expires_after_days": 10}],
    campaigns=[{**BASE, "formula": "100"}],
)


def wallets(out: list) -> list[dict]:
    return [h["wallet"] for h in hooks(out) if "wallet" in h]


def profile_sequences(out: list) -> list[int]:
    return [orjson.loads(v["profile"])["sequence"] for t, _, v in out if t == "profiles.changes"]


def test_every_webhook_of_an_event_shows_the_wallet_after_the_whole_event():
    shop = Shop(program(campaigns=[{**BASE, "formula": "100"}]))
    shop.send("ann", properties={"amount": 1})
    out = shop.send("ann", properties={"amount": 1}, redeem=[{"reward_id": "POINTS", "amount": 30}])
    final = wallet_json(result(out)["wallet"])  # as webhooks show it
    assert final["points"] == 170 and len(wallets(out)) == 2  # redemption and accumulation
    assert wallets(out) == [final, final]


def test_a_fulfilment_shows_one_wallet_too():
    shop = Shop(program(campaigns=[{**BASE, "formula": "100"}]))
    shop.send("ann", properties={"amount": 1})
    redeem = [{"reward_id": "POINTS", "amount": 40}]
    shop.send("ann", id="order", fulfilled=False, properties={"amount": 1}, redeem=redeem)
    out = shop.command("ann", "FULFILL", "order")
    final = wallet_json(result(out)["wallet"])  # as webhooks show it
    assert final["points"] == 160 and wallets(out) == [final, final]


def test_sequence_counts_each_call_of_a_customer_in_its_result_and_profile():
    shop = Shop(POINTS_10)
    seen: list[tuple[int, int]] = []
    for customer in ("ann", "ann", "bob", "ann"):
        out = shop.send(customer, properties={"amount": 1})
        (prof,) = profile_sequences(out)
        seen.append((result(out)["wallet"]["sequence"], prof))
    assert seen == [(1, 1), (2, 2), (1, 1), (3, 3)]
    out = shop.advance(10 * DAY)  # points expire on a timer: a change too
    by_customer = {r["customer_id"]: r["wallet"]["sequence"] for r in _results(out)}
    assert by_customer == {"ann": 4, "bob": 2}
    assert shop.driver.store("customers")["ann"]["sequence"] == 4  # kept in the changelogged state


def test_a_duplicate_repeats_the_first_sequence_and_changes_nothing():
    shop = Shop(POINTS_10)
    first = result(shop.send("ann", id="e1", properties={"amount": 1}))
    shop.send("ann", properties={"amount": 1})
    again = shop.send("ann", id="e1", properties={"amount": 1})
    assert result(again)["wallet"]["sequence"] == first["wallet"]["sequence"] == 1
    assert profile_sequences(again) == []
    assert result(shop.send("ann", properties={"amount": 1}))["wallet"]["sequence"] == 3


def test_the_same_input_gives_the_same_sequences():
    def run() -> list[Any]:
        shop = Shop(POINTS_10, partitions=2)
        out = [shop.send(c, id=f"{c}{i}", properties={"amount": i}) for i in range(3) for c in "abc"]
        out.append(shop.advance(11 * DAY))
        return [(r["customer_id"], r["wallet"]["sequence"]) for o in out for r in _results(o)]

    assert run() == run()


def test_a_state_written_before_sequences_counts_from_zero():
    shop = Shop(POINTS_10)
    shop.send("ann", properties={"amount": 1})
    store = shop.driver.tasks[0].stores["customers"]
    legacy = store.get("ann")
    del legacy["sequence"]
    store.put("ann", legacy)
    assert result(shop.send("ann", properties={"amount": 1}))["wallet"]["sequence"] == 1


def _results(out: list) -> list[dict]:
    return [{**v, "detail": orjson.loads(v["detail"])} for t, _, v in out if t == "loyalty.results"]
