"""Upper bounds on amounts, awards and balances (docs/loyalty.md, "Bounds").

Records reach this processor straight from Kafka, not only through ingest, and doubles
overflow: 1e308 + 1.7e308 is inf, which JSON stores as null, so a wallet silently became 0.
Every amount that enters the ledger or the metrics is checked here first; an event that would
break a bound is refused (FAILED with the reason) and nothing of it is applied. 1e15 keeps
sums of whole points exact in a double (< 2**53).
"""

from __future__ import annotations

import math
from typing import Any

MAX_AMOUNT = 1e12  # one event's properties.amount, one redemption, one credited award
MAX_BALANCE = 1e15  # any balance and lifetime points


class Refused(Exception):
    """An event the engine must not apply; `reason` goes on its FAILED result. Raised
    mid-event: the state it was applied to is then half-changed and must be discarded."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event: dict[str, Any] | None = None  # the input refused, set by the engine


def _outside(value: float, limit: float) -> bool:
    return not math.isfinite(value) or abs(value) > limit


def amount_error(properties: dict[str, Any]) -> str | None:
    """Why the event's `properties.amount` (summed into total_spend) is refused, if it is."""
    value = properties.get("amount")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None  # not a number: counts as 0 (profile.amount_of)
    if _outside(float(value), MAX_AMOUNT):
        return f"amount_out_of_range: properties.amount {value:g} is outside ±{MAX_AMOUNT:g}"
    return None


def redemption_error(reward_id: str, amount: Any) -> str | None:
    if isinstance(amount, int | float) and not isinstance(amount, bool) and not _outside(amount, MAX_AMOUNT):
        return None
    return f"amount_out_of_range: redemption of {amount!r} {reward_id} is outside ±{MAX_AMOUNT:g}"


def check_award(campaign_id: str, reward_id: str, amount: float, balance: float) -> None:
    """Raise Refused when one credit, or the balance it leads to, breaks a bound."""
    if not math.isfinite(amount):
        raise Refused(f"points_not_finite: campaign {campaign_id} gave {amount!r} {reward_id}")
    if amount <= 0:
        return  # credits nothing
    if amount > MAX_AMOUNT:
        raise Refused(
            f"points_out_of_range: campaign {campaign_id} gave {amount:g} {reward_id},"
            f" at most {MAX_AMOUNT:g} per award"
        )
    if _outside(balance + amount, MAX_BALANCE):
        raise Refused(
            f"balance_out_of_range: {reward_id} would reach {balance + amount:g}, at most {MAX_BALANCE:g}"
        )
