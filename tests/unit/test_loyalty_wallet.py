"""The wallet ledger: FIFO oldest-expiring-first consumption, restore, expiry, reversal."""

from processors.loyalty import wallet

DAY = 86_400_000


def wallet_with(*buckets):
    state = wallet.new_wallet({})
    for i, (amount, exp) in enumerate(buckets):
        entry = wallet.line("ACCUMULATION", amount, "POINTS", f"e{i}", i, 0, "c", "true", exp)
        wallet.accumulate(state, entry)
    return state


def test_consumes_oldest_expiring_first_then_non_expiring():
    state = wallet_with((100, None), (50, 10 * DAY), (30, 5 * DAY))
    lines = wallet.consume(state, "POINTS", 60, "r", 0, "REDEMPTION")
    assert [(ln["amount"], ln["expiration_date"]) for ln in lines] == [
        (30, 5 * DAY),
        (30, 10 * DAY),
    ]
    assert wallet.balance(state) == {"POINTS": 120}


def test_shortfall_names_the_missing_amount():
    state = wallet_with((10, None))
    assert "insufficient balance" in wallet.shortfall(state, [{"reward_id": "POINTS", "amount": 11}])
    assert wallet.shortfall(state, [{"reward_id": "POINTS", "amount": 10}]) is None


def test_restore_puts_lines_back_into_their_buckets():
    state = wallet_with((100, None))
    lines = wallet.consume(state, "POINTS", 100, "r", 0, "RESERVATION")
    assert wallet.balance(state) == {}
    wallet.restore(state, lines)
    assert wallet.balance(state) == {"POINTS": 100}


def test_expire_closes_due_buckets_only():
    state = wallet_with((10, DAY), (20, 3 * DAY))
    expired = wallet.expire(state, 2 * DAY)
    assert [ln["amount"] for ln in expired] == [10]
    assert wallet.balance(state) == {"POINTS": 20}
    assert wallet.next_expiry(state) == 3 * DAY


def test_reversing_spent_points_leaves_a_debt():
    state = wallet_with((100, None))
    acc = state["buckets"][0].copy()
    wallet.consume(state, "POINTS", 80, "r", 0, "REDEMPTION")
    wallet.reverse_accumulation(state, acc, "rev", 1, 0)
    assert wallet.balance(state) == {"POINTS": -80}
    assert state["lifetime"] == 0
