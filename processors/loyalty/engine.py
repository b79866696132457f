"""The pure loyalty engine: (state, event, program, now) -> new state and everything to emit.

No Kafka here: the processor loads the customer's state, calls `apply` or `fire` and writes the
returned `Output` (results, notifications, profile, timers, re-keyed commands, event records) in
one transaction. `lookup(event_id)` reads the partition's record of an earlier event (first
result, status, what it applied) for idempotency, fulfil, cancel and reversal.

This module only picks the input's handler: the `Step` and its primitives are core.py, each
kind of input has its own module (events, commands, adjustments, timers, rekeyed, decisions,
merges), each a set of functions taking the `Step`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from processors.loyalty import adjustments, commands, decisions, events, merges, rekeyed, retention, timers
from processors.loyalty.bounds import Refused
from processors.loyalty.campaigns import Budget
from processors.loyalty.core import HELD, Lookup, Step, new_state
from processors.loyalty.dates import SCHEDULED_TYPES
from processors.loyalty.envelope import command, public_event, uid
from processors.loyalty.output import Output
from schemas.program import Program
from schemas.wallet import from_json

__all__ = ["Output", "Refused", "apply", "command", "fire", "new_state", "public_event", "refuse", "uid"]
Handler = Callable[[Step, dict[str, Any]], Output]
# kinds with their own handler; any other kind is an event (EVENT, REGISTER, SCHEDULED)
HANDLERS: dict[str, Handler] = {
    "FULFILL": commands.fulfil,
    "CANCEL": commands.cancel,
    "REVERSE": commands.reverse,
    "CONSENT": commands.consent,
    "IDENTIFY": commands.identify,
    "ADJUST": adjustments.adjust,
    "REFERRAL_REWARD": rekeyed.referral_reward,
    "COUPON_GRANTED": rekeyed.coupon_decision,
    "COUPON_REJECTED": rekeyed.coupon_decision,
    "BUDGET_DECISION": decisions.budget_decision,
    "MERGE": merges.merge,
}
COMMANDS = frozenset(HANDLERS)


def apply(
    state: dict[str, Any] | None,
    event: dict[str, Any],
    program: Program,
    now: int,
    lookup: Lookup,
    budget: Budget | None = None,
) -> Output:
    """Apply one event or command to a customer's state (a deep copy is not taken: the caller
    owns `state`). A repeated event id returns its first result, marked duplicate. Raises
    Refused (bounds) when the event must not be applied: discard `state` and call `refuse`."""
    state = state or new_state(event["customer_id"])
    prior = lookup(event["id"])
    if prior is not None and not retention.expired(prior, now, program):
        return _duplicate(state, prior, event)
    if _waiting(state, event["id"]):  # a repeat: its result follows the budget decisions
        return Output(state)
    step = Step(state, program, now, lookup, budget or Budget())
    step.fresh = event["id"]  # no record yet: `remember` need not read the store again
    handler = HANDLERS.get(event.get("kind", "EVENT"), events.apply_event)
    try:
        out = handler(step, event)
    except Refused as exc:
        exc.event = event
        raise
    return _once(out, event)


def _waiting(state: dict[str, Any], event_id: str) -> bool:
    held = state.get(HELD)
    return bool(held) and (event_id in held or any(h["input_id"] == event_id for h in held.values()))


def _once(out: Output, event: dict[str, Any]) -> Output:
    if event["id"] not in out.records and out.results:  # commands are applied once too
        first = out.results[0]
        since = first["processed_at"]
        out.records[event["id"]] = {"result": first, "status": first["status"], "since": since}
    return out


def refuse(
    state: dict[str, Any] | None,
    event: dict[str, Any],
    reason: str,
    program: Program,
    now: int,
    lookup: Lookup,
) -> Output:
    """After `apply` or `fire` raised Refused: the FAILED output for `exc.event`, on the state
    as it was before (re-read it: the one they were given is half-changed)."""
    state = state or new_state(event["customer_id"])
    step = Step(state, program, now, lookup, Budget())
    step.fresh = event["id"]
    return _once(_refused(step, event, reason), event)


def fire(
    state: dict[str, Any] | None,
    customer_id: str,
    payload: dict[str, Any],
    program: Program,
    now: int,
    lookup: Lookup,
    budget: Budget | None = None,
) -> Output:
    """A durable timer came due for this customer (may raise Refused, as `apply`)."""
    state = state or new_state(customer_id)
    step = Step(state, program, now, lookup, budget or Budget())
    kind = payload.get("type")
    if kind not in SCHEDULED_TYPES:
        return timers.fire(step, payload)
    event = timers.scheduled_event(step, kind)
    if event is None:
        return step.out
    try:
        out = events.apply_event(step, event)
    except Refused as exc:
        exc.event = event
        raise
    timers.after_scheduled(step, kind)
    return out


def _refused(step: Step, event: dict, reason: str) -> Output:
    """The output for an input refused mid-way (bounds.Refused), built on the state as it
    was before it: a FAILED result with the reason and nothing applied."""
    if event.get("kind", "EVENT") in COMMANDS:
        return step.failed(event, reason)
    if event.get("kind") == "SCHEDULED":
        timers.rearm(step, event["type"])  # the timer that produced it has fired
    return events.fail(step, event, reason)


def _duplicate(state: dict, prior: dict, event: dict) -> Output:
    first = dict(prior["result"])
    detail = orjson.loads(first["detail"])
    if "wallet" not in first:  # an event record stored before the Wallet record (v1)
        first["wallet"] = from_json(detail.pop("wallet", None))
    detail["duplicate"] = True
    first["detail"] = orjson.dumps(detail).decode()
    first["reply_to"] = event.get("reply_to")
    return Output(state, results=[first])
