"""Open ledger lines live in the `ledger` store, one key each (processors/loyalty/ledger.py): an
event writes the lines it touches and a bounded customer record, however many lines are open,
and a record of the old shape (every open line inside it) moves its lines on first touch."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from processors.loyalty import engine, ledger, wallet
from processors.loyalty.ledger import SUMMARY, StoreLedger, customer_lines
from processors.loyalty.processor import LoyaltyProcessor
from processors.runtime.store import MemoryBackend, TransactionalStore
from processors.runtime.testing import Emitted, TestDriver
from tests.unit.test_loyalty_engine import DAY, NOW, Shop, program, result, results

YEAR = 365 * DAY
PROGRAM = program(
    rewards=[{"id": "POINTS", "expires_after_days": 365}],  # a year: every line stays open
    campaigns=[{"id": "base", "condition": "properties.amount > 0", "formula": "properties.amount"}],
)


class Metered(TestDriver):
    """Counts the changelog bytes (key + value) each store writes at each commit."""

    __test__ = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.changelog: dict[str, int] = {}
        self.written: dict[str, dict[bytes, bytes | None]] = {}

    def _commit(self) -> list[Emitted]:
        stores = self.tasks[0].stores
        self.written = {name: dict(store.changelog()) for name, store in stores.items()}
        self.changelog = {
            n: sum(len(k) + len(v or b"") for k, v in w.items()) for n, w in self.written.items()
        }
        return super()._commit()


def shop_with_old_record(customer: str, lines: int, expiries: list[int] | None = None) -> Shop:
    """A customer record as the processor wrote it before the `ledger` store: `lines` open
    POINTS lines of 10 inside it (`buckets`), issued a minute apart before NOW."""
    shop = Shop(PROGRAM)
    shop.driver = Metered(LoyaltyProcessor(partitions=1), PROGRAM, now=NOW)
    state = engine.new_state(customer)
    for i in range(lines):
        issued = NOW - (lines - i) * 60_000
        expires = expiries[i] if expiries else issued + YEAR
        entry = wallet.line("ACCUMULATION", 10.0, "POINTS", f"old-{i}", issued, 0, "base", "r", expires)
        wallet.accumulate(state, entry)
    state["lines_v"] = 2  # the bounded wallet existed already
    assert isinstance(state["buckets"], list)
    store = shop.driver.tasks[0].stores["customers"]
    store.put(customer, state)
    store.commit(None)
    return shop


def stored(shop: Shop, customer: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    record = shop.driver.store("customers")[customer]
    return record, customer_lines(shop.driver.store("ledger"), customer)


def test_an_old_record_moves_its_lines_into_the_ledger_store_on_first_touch() -> None:
    shop = shop_with_old_record("ann", 3, expiries=[NOW + 30 * DAY, NOW + 10 * DAY, NOW + 20 * DAY])
    res = result(shop.send("ann", properties={"amount": 0}, redeem=[{"reward_id": "POINTS", "amount": 15}]))
    assert res["status"] == "RESOLVED"
    assert res["wallet"]["balance"] == {"POINTS": 15.0}
    # oldest-expiring first, whatever order the old list held them in
    used = [(ln["source_line_id"], ln["amount"]) for ln in res["detail"]["redemptions"]]
    assert used == [("old-1:ACCUMULATION:0", 10.0), ("old-2:ACCUMULATION:0", 5.0)]
    record, lines = stored(shop, "ann")
    assert "buckets" not in record
    summary = record[SUMMARY]["rewards"]["POINTS"]
    assert (summary["balance"], summary["undated"], summary["lines"]) == (15.0, 0.0, 2)
    assert [(b["id"], b["remaining"]) for b in lines] == [("old-2:ACCUMULATION:0", 5.0),
                                                          ("old-0:ACCUMULATION:0", 10.0)]  # fmt: skip
    assert res["wallet"]["totals"] == [
        {"total": 5.0, "reward_id": "POINTS", "expiration_date": NOW + 20 * DAY},
        {"total": 10.0, "reward_id": "POINTS", "expiration_date": NOW + 30 * DAY},
    ]


def test_the_next_purchase_writes_as_much_with_5000_open_lines_as_with_10() -> None:
    written = {}
    for lines in (10, 5000):
        shop = shop_with_old_record("big", lines)
        shop.send("big", properties={"amount": 7})  # the first touch moves the old lines
        shop.driver.advance(60_000)
        res = result(shop.send("big", properties={"amount": 5}))
        assert res["wallet"]["points"] == lines * 10 + 12
        written[lines] = dict(shop.driver.changelog)
        record, stored_lines = stored(shop, "big")
        assert len(stored_lines) == lines + 2
        assert record[SUMMARY]["rewards"]["POINTS"]["lines"] == lines + 2
    for store in ("customers", "ledger"):
        small, big = written[10][store], written[5000][store]
        assert 0 < big < 5_000, (store, written)
        assert max(small, big) / min(small, big) <= 1.2, (store, written)


def test_spent_expired_and_moved_lines_leave_the_store_with_tombstones() -> None:
    shop = shop_with_old_record("bob", 0)
    first = result(shop.send("bob", properties={"amount": 30}))["detail"]
    shop.driver.advance(DAY)
    shop.send("bob", properties={"amount": 20})
    shop.driver.advance(DAY)
    res = result(shop.send("bob", properties={"amount": 0}, redeem=[{"reward_id": "POINTS", "amount": 30}]))
    assert res["wallet"]["points"] == 20.0
    first_id = first["accumulations"][0]["id"]
    tombstones = [k for k, v in shop.driver.written["ledger"].items() if v is None]
    assert len(tombstones) == 1 and b"\x00" in tombstones[0]  # the line's; its id key is local
    assert not [k for k in shop.driver.store("ledger") if k.endswith(f"\x01{first_id}")]  # gone too
    _, lines = stored(shop, "bob")
    assert [b["remaining"] for b in lines] == [20.0]
    shop.advance(YEAR)  # the rest expires
    _, lines = stored(shop, "bob")
    assert lines == []
    assert stored(shop, "bob")[0][SUMMARY]["rewards"] == {}


def test_reservation_cancel_and_reversal_put_lines_back_in_the_store() -> None:
    shop = shop_with_old_record("cy", 2, expiries=[NOW + 10 * DAY, NOW + 20 * DAY])
    held = shop.send(
        "cy", properties={"amount": 0}, fulfilled=False, redeem=[{"reward_id": "POINTS", "amount": 15}]
    )
    pending = result(held)
    assert (pending["status"], pending["wallet"]["points"], pending["wallet"]["pending"]) == (
        "PENDING",
        5.0,
        15.0,
    )
    assert [b["remaining"] for b in stored(shop, "cy")[1]] == [5.0]  # the first line spent whole
    (cancelled,) = results(shop.command("cy", "CANCEL", pending["event_id"]))
    assert (cancelled["status"], cancelled["wallet"]["points"], cancelled["wallet"]["pending"]) == (
        "CANCELLED",
        20.0,
        0.0,
    )
    assert [(b["id"], b["remaining"]) for b in stored(shop, "cy")[1]] == [
        ("old-0:ACCUMULATION:0", 10.0), ("old-1:ACCUMULATION:0", 10.0)]  # fmt: skip
    bought = result(shop.send("cy", properties={"amount": 40}))
    spent = result(shop.send("cy", properties={"amount": 0}, redeem=[{"reward_id": "POINTS", "amount": 55}]))
    assert spent["wallet"]["points"] == 5.0
    (reversed_,) = results(shop.command("cy", "REVERSE", bought["event_id"]))
    assert reversed_["wallet"]["points"] == -35.0  # 40 taken back, 35 of it already spent: owed
    (undone,) = results(shop.command("cy", "REVERSE", spent["event_id"]))
    assert undone["wallet"]["points"] == 20.0
    record, lines = stored(shop, "cy")
    assert sum(b["remaining"] for b in lines) == record[SUMMARY]["rewards"]["POINTS"]["balance"] == 20.0


def test_a_ledger_restored_from_its_changelog_answers_as_the_one_written() -> None:
    """The lines' id keys are local: the changelog carries one record per line, a restore
    derives the id keys again, and reservations, reversals and expiry after a cold restart
    answer exactly as the store that wrote them (a line closed before the restart leaves a
    stale id key, read as closed)."""
    live = Shop(PROGRAM)
    live.driver = TestDriver(LoyaltyProcessor(partitions=1), PROGRAM, now=NOW, keep_changelogs=True)
    ids = iter(f"e{n}" for n in range(100))
    first = result(live.send("dee", id=next(ids), properties={"amount": 30}))
    live.driver.advance(DAY)
    second = result(live.send("dee", id=next(ids), properties={"amount": 20}))
    spent = result(live.send("dee", id=next(ids), properties={"amount": 0},
                             redeem=[{"reward_id": "POINTS", "amount": 35}]))  # fmt: skip (closes line 1)
    held = result(live.send("dee", id=next(ids), properties={"amount": 0}, fulfilled=False,
                            redeem=[{"reward_id": "POINTS", "amount": 5}]))  # fmt: skip
    assert [r["status"] for r in (first, second, spent, held)] == ["RESOLVED"] * 3 + ["PENDING"]
    logged = live.driver.changelogs[("ledger", 0)]
    assert logged and all(b"\x00" in key for key, _ in logged)  # no id key in the changelog

    restarted = Shop(PROGRAM)
    restarted.driver = live.driver.restarted(LoyaltyProcessor(partitions=1))
    assert stored(restarted, "dee") == stored(live, "dee")
    live_ids = {k: v for k, v in live.driver.store("ledger").items() if "\x00" not in k}
    restored_ids = {k: v for k, v in restarted.driver.store("ledger").items() if "\x00" not in k}
    assert live_ids and live_ids.items() <= restored_ids.items()  # derived again, stale ones beside

    def after(shop: Shop) -> list[dict[str, Any]]:
        commands = [("CANCEL", held), ("REVERSE", first), ("REVERSE", spent), ("REVERSE", second)]
        out = [r for n, (kind, target) in enumerate(commands)
               for r in results(shop.send("dee", "COMMAND", id=f"c{n}", kind=kind, payload={},
                                          target_event_id=target["event_id"]))]  # fmt: skip
        shop.advance(YEAR)
        return [{k: v for k, v in r.items() if k != "processed_at"} for r in out]

    answers = after(live)
    assert [r["status"] for r in answers] == ["CANCELLED", "REVERSED", "REVERSED", "REVERSED"]
    assert after(restarted) == answers
    assert stored(restarted, "dee") == stored(live, "dee")


def test_a_stale_id_key_reads_as_a_closed_line() -> None:
    """An id key left by a restore (its line's tombstone could not say which id it had) may
    point at a key another line holds now: `find` reads it as closed, not as that line."""
    store = TransactionalStore("ledger", MemoryBackend(), local=ledger.is_local)
    line = {**wallet.line("ACCUMULATION", 10.0, "POINTS", "new", NOW, 0, "base", "r", NOW + YEAR),
            "remaining": 10.0}  # fmt: skip
    view = StoreLedger(store, "eve", {})
    view.add(line)
    view.write()
    (key,) = [k for k, _ in store.range() if "\x00" in k]
    store.put("eve\x01old:ACCUMULATION:0", key)  # a closed line's id key, left behind
    again = StoreLedger(store, "eve", view.summary)
    assert again.find("old:ACCUMULATION:0") is None
    assert again.find(line["id"])["id"] == line["id"]
    assert list(store.changelog()) == [key.encode()]  # id keys are never logged


ID_TEXT = st.text(st.characters(blacklist_characters="\x00\x01", blacklist_categories=("Cs",)), min_size=1,
                  max_size=12)  # fmt: skip (no lone surrogate: not UTF-8, no id can hold one)


@given(customer=ID_TEXT, reward=ID_TEXT, event=ID_TEXT)
def test_the_id_key_a_restore_derives_is_the_one_the_ledger_writes(customer, reward, event) -> None:
    """`derived` reads a line's id off its JSON's start and writes its key's JSON by hand:
    whatever JSON had to escape (quotes, backslashes, control and non-ASCII characters), it
    gives the id key and value the ledger itself writes."""
    store = TransactionalStore("ledger", MemoryBackend())
    view = StoreLedger(store, customer, {})
    view.add({**wallet.line("ACCUMULATION", 5.0, reward, event, NOW, 0, None, None, NOW + YEAR),
              "remaining": 5.0})  # fmt: skip
    view.write()
    written = store.overlay
    ((line_key, line),) = [(k, v) for k, v in written.items() if not ledger.is_local(k)]
    ((id_key, id_value),) = [(k, v) for k, v in written.items() if ledger.is_local(k)]
    assert ledger.derived(line_key, line) == (id_key, id_value)
    assert ledger.derived(line_key, None) is None and ledger.derived(id_key, id_value) is None
