"""Bounded state: the `events` store keeps a record `retention.events_days` (issue 19); after
that a repeated id counts as new and a reversal is refused with the reason."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from processors.loyalty import records, retention
from processors.loyalty.processor import LoyaltyProcessor
from processors.loyalty.retention import SINCE
from processors.runtime.testing import TestDriver
from tests.unit.test_loyalty_engine import BASE, DAY, NOW, Shop, program, result

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


def test_the_index_is_never_logged_and_a_cold_restart_derives_it() -> None:
    """The `~since/` keys are a local index: the changelog carries the records only, a restore
    derives each record's index again, and the sweeps after the restart delete what the store
    that wrote them deletes, with tombstones."""
    live = Shop(PROGRAM)
    live.driver = TestDriver(LoyaltyProcessor(partitions=1), PROGRAM, now=NOW, keep_changelogs=True)
    live.send("ann", id="old", properties={"amount": 1})
    live.driver.advance(31 * DAY)  # "old" is swept: its tombstone is logged, its index key is not
    live.send("ann", id="new", properties={"amount": 1})
    live.send("bob", id="bought", properties={"amount": 1})
    live.send("bob", id="hold", fulfilled=False, reserve=60, redeem=[{"reward_id": "POINTS", "amount": 10}])
    logged = live.driver.changelogs[("events", 0)]
    assert (b"old", None) in logged and {b"new", b"hold"} <= {key for key, _ in logged}
    assert not [key for key, _ in logged if key.startswith(SINCE.encode())], "the index is not logged"

    restarted = Shop(PROGRAM)
    restarted.driver = live.driver.restarted(LoyaltyProcessor(partitions=1))
    restored = restarted.driver.store("events")
    stale = retention.index_key(NOW, "old")  # a tombstone cannot say which index key it had
    assert sorted(restored) == sorted([*keys(live), stale])
    assert {k: v for k, v in restored.items() if k != stale} == live.driver.store("events")

    for shop in (live, restarted):
        shop.driver.advance(30 * DAY + 3_600_000)  # "new" is past the window, "hold" still open
    assert keys(restarted) == keys(live) and "new" not in keys(live)
    assert restarted.driver.store("events")["hold"]["status"] == "PENDING"  # kept, window restarted
    assert (b"new", None) in restarted.driver.changelogs[("events", 0)], "swept with a tombstone"


@given(event_id=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20),
       at=st.integers(min_value=0, max_value=10**15 - 1))  # fmt: skip
def test_the_index_key_a_restore_derives_is_the_one_the_processor_writes(event_id, at) -> None:
    """`derived` reads `since` off the stored record's start: for any event id, and for a
    record written before `since` came first (parsed), it gives the processor's index key."""
    record = {"result": {"processed_at": at, "status": "RESOLVED"}, "status": "RESOLVED", "since": at}
    expected = (retention.index_key(at, event_id).encode(), orjson.dumps(1))
    legacy = [orjson.dumps(r) for r in ({k: v for k, v in record.items() if k != "since"}, record)]
    packed = [records.dumps(r) for r in (record, {k: v for k, v in record.items() if k != "status"})]
    for value in (*packed, *legacy):
        assert retention.derived(event_id.encode(), value) == expected
    assert retention.derived(event_id.encode(), None) is None
    assert retention.derived(expected[0], expected[1]) is None  # an index record an old changelog logged
    assert retention.is_local(expected[0]) and not retention.is_local(event_id.encode())


def test_a_record_is_stored_packed_and_read_back_whole() -> None:
    """The store keeps `since` and `status` in the open and the rest compressed (records.py,
    the store's codec): the record reads back whole from fewer bytes, a repeat still gets the
    first result, and a record written before packing (plain JSON) reads as it is."""
    shop = Shop(PROGRAM)
    shop.send("ann", id="order", properties={"amount": 1})
    raw = shop.driver.tasks[0].stores["events"].backend.get(b"order")
    record = shop.driver.store("events")["order"]
    assert set(record) == {"result", "status", "since"} and record["result"]["event_id"] == "order"
    assert records.loads(raw) == record and records.dumps(record) == raw
    assert len(raw) < 0.7 * len(orjson.dumps(record))  # a third with examples/program.yaml's records
    assert raw.startswith(b'{"since":%d,"status":"RESOLVED"}\x00' % record["since"])  # what a restore reads
    assert records.loads(orjson.dumps(record)) == record and records.loads(b"1") == 1
    again = result(shop.send("ann", id="order", properties={"amount": 1}))
    assert again["detail"]["duplicate"] and again["points"] == record["result"]["points"]
