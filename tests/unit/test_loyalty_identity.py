"""An anonymous customer identifies as a known id (processors/loyalty/identity.py): the wallet,
metrics and progress move once across partitions, later inputs to the anonymous id follow."""

from __future__ import annotations

import orjson
import pytest

from processors.loyalty.ledger import customer_lines
from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.testing import TestDriver
from schemas.topics import PROFILES_CHANGES
from tests.unit import test_journeys as journeys
from tests.unit.test_loyalty_engine import DAY, NOW, Shop, hooks, profile, program, results

HOW = "register it with anonymous: true"
ANON, KNOWN = "anon", "known"  # partitions 0 and 2 of 6 (murmur2, as production)
PROGRAM = program(
    campaigns=[{"id": "base", "condition": "properties.amount > 0", "formula": "properties.amount"}],
    rewards=[{"id": "POINTS", "name": "Points", "expires_after_days": 30}],
)


def six_partitions() -> Shop:
    s = Shop(PROGRAM)
    s.driver = TestDriver(LoyaltyProcessor(partitions=6), PROGRAM, now=NOW, partitions=6)
    return s


def identify(shop: Shop, anon: str = ANON, new_id: str = KNOWN, **fields) -> list:
    payload = {"new_id": new_id, **fields.pop("payload", {})}
    return shop.send(anon, "IDENTIFY", kind="IDENTIFY", payload=payload, **fields)


def buy(shop: Shop, who: str, amount: float, **fields) -> list:
    return shop.send(who, properties={"amount": amount}, **fields)


def wallet_of(shop: Shop, who: str) -> dict:
    return [r for r in results(shop.driver.emitted) if r["customer_id"] == who][-1]["wallet"]


def state_of(shop: Shop, who: str) -> dict:
    return shop.driver.store("customers", shop.driver.partition_for(who))[who]


@pytest.fixture
def shop() -> Shop:
    s = six_partitions()
    assert s.driver.partition_for(ANON) != s.driver.partition_for(KNOWN)
    s.command(ANON, "REGISTER", anonymous=True, customer={"name": "guest"})
    buy(s, ANON, 30)
    buy(s, ANON, 70)
    buy(s, KNOWN, 5)
    return s


def test_merge_moves_balance_lines_and_metrics_exactly(shop: Shop) -> None:
    out = identify(shop)
    sealed, merged = (r for r in results(out) if r["kind"] in ("IDENTIFY", "MERGE"))
    assert (sealed["customer_id"], sealed["status"]) == (ANON, "RESOLVED")
    assert sealed["detail"]["merged_into"] == KNOWN
    assert sealed["wallet"]["points"] == 0 and sealed["wallet"]["lifetime"] == 0
    assert {ln["amount"] for ln in sealed["wallet"]["lines"]} == {0.0}  # closed on the anonymous id
    assert sorted(ln["amount"] for ln in sealed["detail"]["transfers"]) == [-70, -30]
    merge_key = next(k for t, k, v in out if t == "events.loyalty" and v["kind"] == "MERGE")
    assert merge_key == KNOWN  # re-keyed: applied on the known id's partition
    assert (merged["customer_id"], merged["status"]) == (KNOWN, "RESOLVED")
    assert merged["wallet"]["points"] == 105 and merged["wallet"]["lifetime"] == 105
    assert sorted(ln["amount"] for ln in merged["detail"]["transfers"]) == [30, 70]
    assert sorted(ln["amount"] for ln in merged["wallet"]["lines"]) == [30, 70]
    assert all(
        ln["expiration_date"] == shop.driver.clock.now_ms() + 30 * DAY for ln in merged["wallet"]["lines"]
    )
    prof = profile([o for o in out if o[1] == KNOWN])
    assert (prof["purchase_count"], prof["total_spend"], prof["anonymous"]) == (3, 105, False)
    assert prof["events_by_type"]["PURCHASE"] == 3
    anon_prof = profile([o for o in out if o[1] == ANON])
    assert anon_prof["merged_into"] == KNOWN and anon_prof["purchase_count"] == 0
    assert state_of(shop, KNOWN)["customer"]["name"] == "guest"


def test_webhook_once_with_the_merged_wallet(shop: Shop) -> None:
    out = identify(shop, payload={"customer": {"email": "k@example.com"}})
    (data,) = hooks(out, "CUSTOMER_ANONYMOUS_TO_REGISTERED")
    assert data["customer_id"] == KNOWN and data["anonymous_id"] == ANON
    assert data["customer"] == {"name": "guest", "email": "k@example.com"}
    assert data["wallet"]["points"] == 105
    again = identify(shop) + identify(shop, reference="retry")  # same id, then another id
    assert hooks(again, "CUSTOMER_ANONYMOUS_TO_REGISTERED") == []
    assert wallet_of(shop, KNOWN)["points"] == 105


def test_repeated_identify_is_idempotent(shop: Shop) -> None:
    first = identify(shop)
    same = identify(shop, id=next(v for t, _, v in first if t == "events.loyalty")["target_event_id"])
    assert [r["detail"]["duplicate"] for r in results(same)] == [True]
    other = identify(shop, reference="another")
    (res,) = results(other)
    assert res["status"] == "RESOLVED" and res["detail"]["already_merged"] is True
    assert not [v for t, _, v in other if t == "events.loyalty" and v["kind"] == "MERGE"]
    # the MERGE itself delivered twice (a redelivery): applied once
    merge = next(v for t, _, v in first if t == "events.loyalty" and v["kind"] == "MERGE")
    shop.driver.send("events.loyalty", KNOWN, merge)
    shop.driver.send("events.loyalty", KNOWN, {**merge, "id": "another-merge-of-the-same-customer"})
    assert wallet_of(shop, KNOWN)["points"] == 105 and wallet_of(shop, KNOWN)["lifetime"] == 105
    elsewhere = identify(shop, new_id="someone-else")
    assert results(elsewhere)[0]["status"] == "REJECTED"
    assert results(elsewhere)[0]["reason"] == f"customer {ANON} was already merged into {KNOWN}"


def test_events_to_the_anonymous_id_after_the_merge_are_credited_to_the_known_id(shop: Shop) -> None:
    identify(shop)
    out = buy(shop, ANON, 10, id="late")
    (res,) = results(out)
    assert (res["event_id"], res["customer_id"], res["status"]) == ("late", KNOWN, "RESOLVED")
    assert res["wallet"]["points"] == 115
    assert results(buy(shop, ANON, 10, id="late"))[0]["detail"]["duplicate"] is True  # once
    assert results(buy(shop, KNOWN, 1))[0]["wallet"]["points"] == 116
    assert customer_lines(shop.driver.store("ledger", shop.driver.partition_for(ANON)), ANON) == []


def test_a_pre_merge_event_reversed_through_the_anonymous_id_leaves_the_known_wallet(
    shop: Shop,
) -> None:
    buy(shop, ANON, 20, id="early")
    identify(shop)
    assert wallet_of(shop, KNOWN)["points"] == 125
    (res,) = results(shop.command(ANON, "REVERSE", "early"))
    assert (res["customer_id"], res["status"]) == (KNOWN, "REVERSED")
    assert res["wallet"]["points"] == 105 and res["wallet"]["lifetime"] == 105


def test_an_open_reservation_moves_and_is_fulfilled_on_the_known_id(shop: Shop) -> None:
    redeem = [{"reward_id": "POINTS", "amount": 40}]
    buy(shop, ANON, 0, id="order", fulfilled=False, redeem=redeem)
    identify(shop)
    assert wallet_of(shop, KNOWN)["points"] == 65 and wallet_of(shop, KNOWN)["pending"] == 40
    (res,) = results(shop.command(ANON, "FULFILL", "order"))
    assert (res["customer_id"], res["status"]) == (KNOWN, "RESOLVED")
    assert res["wallet"]["points"] == 65 and res["wallet"]["pending"] == 0


def test_timers_of_the_anonymous_id_do_nothing_and_moved_lines_still_expire(shop: Shop) -> None:
    identify(shop)
    out = shop.advance(31 * DAY)
    assert {r["customer_id"] for r in results(out)} == {KNOWN}
    assert wallet_of(shop, KNOWN)["points"] == 0  # 30-day points expired on the known id


@pytest.mark.parametrize(
    "setup,new_id,reason",
    [
        (
            lambda s: None,
            KNOWN,
            "customer bob is not an anonymous customer (register it with anonymous: true)",
        ),
        (lambda s: s.command("bob", "REGISTER", anonymous=True), "bob", "new_id must name another customer"),
    ],
)
def test_identify_is_rejected_with_a_reason(setup, new_id: str, reason: str) -> None:
    s = six_partitions()
    buy(s, "bob", 5)
    setup(s)
    (res,) = results(identify(s, "bob", new_id))
    assert (res["status"], res["reason"]) == ("REJECTED", reason)
    assert not [v for t, _, v in s.driver.emitted if t == "events.loyalty" and v.get("kind") == "MERGE"]
    assert orjson.loads(s.driver.outputs("profiles.changes")[-1]["profile"]).get("merged_into") is None


def test_journeys_of_the_anonymous_id_exit_at_the_merge_and_its_later_events_are_ignored() -> None:
    """The sealed profile (merged_into) ends the anonymous id's journeys; the same event types
    then reach journeys under the known id only (loyalty forwards them re-keyed)."""
    d = journeys.driver(journeys.CART_ABANDONMENT)
    journeys.send_event(d, ANON, "ADD_TO_CART")
    s = six_partitions()
    s.command(ANON, "REGISTER", anonymous=True)
    sealed = next(v for t, _, v in identify(s) if t == "profiles.changes" and v["customer_id"] == ANON)
    out = d.send(PROFILES_CHANGES, ANON, sealed)
    assert journeys.activity(out) == [("EXIT", "wait_30m", None)]
    assert orjson.loads(out[0][2]["data"]) == {"reason": f"merged_into:{KNOWN}"}
    assert journeys.activity(journeys.send_event(d, ANON, "ADD_TO_CART")) == []
    assert journeys.activity(d.advance(60 * journeys.MINUTE)) == []
