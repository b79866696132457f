"""Campaign budgets, decided exactly on the partition that owns the campaign.

A customer's partition never spends a budget itself: for a budgeted award it holds the event's
result and sends BUDGET_RESERVE (key = campaign id) to campaigns.budgets. This partition keeps
what the campaign has spent in its `budgets` store, grants what is left (all of the request, a
part of it, or nothing) and answers BUDGET_DECISION (key = customer) on events.loyalty, in the
same transaction as the new total: under exactly-once, a spend is counted once however often
the processor crashes. The transaction that exhausts the budget also sends
CAMPAIGN_BUDGET_EXHAUSTED, once per campaign and budget.
"""

from __future__ import annotations

from typing import Any

from processors.loyalty import campaigns
from processors.loyalty import notifications as n
from processors.loyalty.envelope import as_json, command, uid
from schemas.program import Program
from schemas.topics import EVENTS_LOYALTY, NOTIFICATIONS

Command = tuple[str, str, dict[str, Any]]
EPSILON = 1e-9  # amounts are doubles: what is left below this is nothing


def ledger_key(campaign_id: str) -> str:
    return f"campaign:{campaign_id}"


class Budgets:
    """The `budgets` store view of the campaign partitions: `campaign:<id>` -> {spent, budget,
    exhausted_at}. (Customer partitions keep `exhausted:<id>` in the same store.)"""

    def __init__(self, store: Any) -> None:
        self.store = store

    def reserve(self, cmd: dict[str, Any], program: Program, now: int) -> list[Command]:
        payload = as_json(cmd.get("payload"))
        campaign_id = payload["campaign_id"]
        requested = float(payload["amount"])
        c = campaigns.by_id(program).get(campaign_id)
        key = ledger_key(campaign_id)
        ledger = self.store.get(key) or {"spent": 0.0, "budget": None, "exhausted_at": None}
        if c is not None and c.budget is not None and ledger["budget"] != c.budget:
            if ledger["exhausted_at"] is not None and c.budget > ledger["spent"] + EPSILON:
                ledger["exhausted_at"] = None  # raised: it may run out (and notify) again
            ledger["budget"] = c.budget
        granted, reason = self._grant(c, ledger, requested)
        ledger["spent"] += granted
        out: list[Command] = []
        exhausted = c is not None and c.budget is not None and c.budget - ledger["spent"] <= EPSILON
        if exhausted and ledger["exhausted_at"] is None:
            ledger["exhausted_at"] = now
            out.append(self._exhausted(cmd, program, c, ledger, now))
        self.store.put(key, ledger)
        decision = {
            **payload,
            "requested": requested,
            "granted": granted,
            "reason": reason,
            "spent": ledger["spent"],
            "budget": c.budget if c is not None else None,
            "reward_id": c.reward_id if c is not None else None,  # what the budget counts
            "exhausted": exhausted,
            "exhausted_at": ledger["exhausted_at"],
        }
        reply = command(
            "BUDGET_DECISION",
            cmd["customer_id"],
            cmd["type"],
            now,
            id=uid("budget-decision", cmd["id"]),
            target_event_id=cmd.get("target_event_id"),
            payload=decision,
        )
        return [*out, (EVENTS_LOYALTY, cmd["customer_id"], reply)]

    @staticmethod
    def _grant(c: Any, ledger: dict[str, Any], requested: float) -> tuple[float, str | None]:
        if c is None:
            return 0.0, "campaign removed"
        if c.budget is None:  # the budget was taken off since the request was sent
            return requested, None
        left = c.budget - ledger["spent"]
        if left <= EPSILON:
            return 0.0, campaigns.BUDGET_EXHAUSTED
        return min(requested, left), None

    @staticmethod
    def _exhausted(cmd: dict, program: Program, c: Any, ledger: dict, now: int) -> Command:
        data = {
            "campaign_id": c.id,
            "campaign_name": c.name,
            "reward_id": c.reward_id,
            "budget": c.budget,
            "spent": ledger["spent"],
            "exhausted_at": now,
            "customer_id": cmd["customer_id"],
            "trigger_event_id": cmd.get("target_event_id"),
        }
        source = f"budget:{c.id}:{c.budget}"  # the id is stable per campaign and budget
        customer = cmd["customer_id"]
        note = n.notification(source, n.CAMPAIGN_BUDGET_EXHAUSTED, customer, data, now, program.version)
        return (NOTIFICATIONS, customer, note)
