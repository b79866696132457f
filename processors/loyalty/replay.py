"""Run events through the real loyalty processor in memory: no Kafka, no PostgreSQL.

`POST /admin/simulate` (ingest/simulate.py) and `loyalty backtest` (deploy/backtest.py) use
this instead of a copy of the rules: the LoyaltyProcessor itself runs on the runtime's
in-memory TestDriver (same task, store and timer code as production). The clock follows the
events (each is processed at its `received_at`; timers that came due in between fire first),
and the re-keyed commands the processor emits (referral and coupon claims, budget
reservations, their answers) are fed back in, as Kafka would deliver them, until nothing more
is pending.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from processors.loyalty import engine, ledger, wallet
from processors.loyalty.processor import CUSTOMERS, LEDGER, LoyaltyProcessor
from processors.runtime.testing import Emitted, TestDriver
from schemas.program import Program
from schemas.topics import (
    CAMPAIGN_BUDGETS,
    COUPON_CLAIMS,
    EVENTS_LOYALTY,
    LOYALTY_REFERRALS,
    LOYALTY_RESULTS,
    NOTIFICATIONS,
)

REKEYED = (LOYALTY_REFERRALS, COUPON_CLAIMS, CAMPAIGN_BUDGETS, EVENTS_LOYALTY)
MAX_HOPS = 16  # re-keyed rounds per input (a referral takes two); more would be a loop
SEED_EVENT = "simulation:start"  # the event id of a seeded starting balance's ledger line


@dataclass
class Step:
    """What one input (an event, or the timers that came due before it) produced."""

    trigger: str  # "event" or "timers"
    at: int
    results: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)

    def add(self, emitted: list[Emitted]) -> None:
        for topic, _, value in emitted:
            if topic == LOYALTY_RESULTS:
                self.results.append(value)
            elif topic == NOTIFICATIONS:
                self.notifications.append(value)


class Replay:
    """One program, a set of customers' states, a clock that moves with the events.

    `partitions`: how many partitions the driver spreads customers over (budgets are exact
    whatever the count: they are decided on the campaign's partition, as in production).
    `checked` False: outputs are not round-tripped through their Avro schemas (a backtest
    reads only amounts and tiers of them; it saves a fifth of its time)."""

    def __init__(self, program: Program, start_ms: int, partitions: int = 1, checked: bool = True) -> None:
        self.driver = TestDriver(LoyaltyProcessor(partitions), program, now=start_ms, partitions=partitions,
                                 check_outputs=checked)  # fmt: skip

    @property
    def now(self) -> int:
        return self.driver.clock.now_ms()

    def seed(self, customer_id: str, state: dict[str, Any]) -> None:
        """Put a customer's starting state in the `customers` store (see `starting_state`)."""
        task = self.driver.tasks[self.driver.partition_for(customer_id)]
        task.stores[CUSTOMERS].put(customer_id, state)
        task.commit({})

    def state(self, customer_id: str) -> dict[str, Any] | None:
        """The customer's state, its open lines readable (`wallet.balance`) from the `ledger` store."""
        task = self.driver.tasks[self.driver.partition_for(customer_id)]
        return ledger.attach(task.stores[CUSTOMERS].get(customer_id), task.stores[LEDGER])

    def customers(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for task in self.driver.tasks.values():
            for customer_id, state in task.stores[CUSTOMERS].range():
                yield customer_id, ledger.attach(state, task.stores[LEDGER])

    def advance(self, to_ms: int) -> Step:
        """Move the clock to `to_ms` (never back) and fire every timer due by then."""
        step = Step("timers", max(to_ms, self.now))
        step.add(self._take(self.driver.advance(max(0, to_ms - self.now))))
        return step

    def run(self, event: dict[str, Any]) -> tuple[Step, Step]:
        """(timers due before the event, the event with the re-keyed commands it caused)."""
        timers = self.advance(event.get("received_at") or self.now)
        step = Step("event", self.now)
        pending: list[Emitted] = [(EVENTS_LOYALTY, event["customer_id"], event)]
        for _ in range(MAX_HOPS):
            if not pending:
                break
            emitted: list[Emitted] = []
            for topic, key, value in pending:
                emitted += self._take(self.driver.send(topic, key, value))
            step.add(emitted)
            pending = [e for e in emitted if e[0] in REKEYED]
        return timers, step

    def _take(self, emitted: list[Emitted]) -> list[Emitted]:
        self.driver.emitted.clear()  # a long replay must not keep every output in memory
        return emitted


def starting_state(
    customer_id: str,
    now_ms: int,
    *,
    tier: str | None = None,
    balances: dict[str, float] | None = None,
    lifetime_points: float | None = None,
    metrics: dict[str, Any] | None = None,
    customer: dict[str, Any] | None = None,
    consent: dict[str, bool] | None = None,
    registered_at: int | None = None,
) -> dict[str, Any]:
    """An engine state for a customer who already has a tier, balances and metrics: the
    engine's own new state with balances credited as ledger lines (wallet.accumulate)."""
    state = engine.new_state(customer_id)
    for i, (reward_id, amount) in enumerate(sorted((balances or {}).items())):
        line = wallet.line("ACCUMULATION", float(amount), reward_id, SEED_EVENT, now_ms, i)
        wallet.accumulate(state, line)
    if lifetime_points is not None:
        state["lifetime"] = max(float(lifetime_points), wallet.balance(state).get(wallet.POINTS, 0.0))
    if tier is not None:
        state["tier"] = tier
    state["metrics"].update(metrics or {})
    if customer:
        state["customer"] = dict(customer)
    if consent:
        state["consent"] = dict(consent)
    if registered_at is not None:
        state["registered_at"] = registered_at
    return state


def detail(result: dict[str, Any]) -> dict[str, Any]:
    """A Result's detail JSON (rules applied and skipped, ledger lines, wallet, tier)."""
    try:
        body = orjson.loads(result.get("detail") or "{}")
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}
