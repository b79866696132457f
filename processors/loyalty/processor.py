"""The loyalty processor: a thin shell running the pure engine on the stream runtime.

Everything one record causes (state, event records, results, notifications, profile, timers,
re-keyed commands) is written through `ctx`, so it commits in the record's transaction.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from processors.loyalty import agenda, dry_run, engine, identity, ledger, metrics, records, retention
from processors.loyalty.bounds import Refused
from processors.loyalty.budgets import Budgets
from processors.loyalty.campaigns import Budget, exhausted_key
from processors.loyalty.codes import Codes
from processors.loyalty.envelope import DRY_RUN, public_event
from processors.runtime.api import Context, Processor, Record, Timer
from schemas.event_types import TypeRegistry
from schemas.intake import Invalid, record_problem, rejected_result
from schemas.settings import Settings
from schemas.topics import (
    CAMPAIGN_BUDGETS,
    COUPON_CLAIMS,
    EVENTS_LOYALTY,
    LOYALTY_DRY_RUN_REPLIES,
    LOYALTY_REFERRALS,
    LOYALTY_RESULTS,
    NOTIFICATIONS,
    PROFILES_CHANGES,
)

log = logging.getLogger(__name__)
CUSTOMERS, EVENTS, CODES, BUDGETS = "customers", "events", "codes", "budgets"
LEDGER = "ledger"  # a customer's open lines, one key each (ledger.py); `customers` holds a summary
TYPES = TypeRegistry()  # event types compiled per program version, as ingest compiles them


class LoyaltyProcessor(Processor):
    name = "loyalty"
    inputs = [EVENTS_LOYALTY, LOYALTY_REFERRALS, COUPON_CLAIMS, CAMPAIGN_BUDGETS]
    outputs = [
        LOYALTY_RESULTS,
        NOTIFICATIONS,
        PROFILES_CHANGES,
        EVENTS_LOYALTY,
        LOYALTY_REFERRALS,
        COUPON_CLAIMS,
        CAMPAIGN_BUDGETS,
        LOYALTY_DRY_RUN_REPLIES,
    ]
    stores = [CUSTOMERS, EVENTS, CODES, BUDGETS, LEDGER]
    cached_stores = frozenset({BUDGETS})  # a few keys per campaign, read by every purchase
    local_indexes = {LEDGER: ledger.__name__, EVENTS: retention.__name__}  # never logged
    store_codecs = {EVENTS: records}  # event records packed: a third of the bytes

    def __init__(self, partitions: int | None = None) -> None:
        self.partitions = partitions or Settings.from_env().partitions
        self.armed: set[int] = set()  # partitions whose retention sweep this instance scheduled

    def process(self, ctx: Context, record: Record) -> None:
        value = record.value
        if record.topic == LOYALTY_REFERRALS:
            self._commands(ctx, Codes(ctx.store(CODES)).referral(value, ctx.now()))
        elif record.topic == COUPON_CLAIMS:
            self._commands(ctx, Codes(ctx.store(CODES)).coupon(value, ctx.now()))
        elif record.topic == CAMPAIGN_BUDGETS:
            self._commands(ctx, Budgets(ctx.store(BUDGETS)).reserve(value, ctx.config, ctx.now()))
        elif value.get("kind") == DRY_RUN:  # run on overlays, answer on the replies topic only
            dry_run.run(self, ctx, value)
        else:
            self._event(ctx, value)

    def _event(self, ctx: Context, event: dict[str, Any]) -> None:
        customers, events = ctx.store(CUSTOMERS), ctx.store(EVENTS)
        invalid = record_problem(TYPES.of(ctx.config), event)  # straight from Kafka: ingest's check
        if invalid is not None and events.get(event["id"]) is None:  # a repeat keeps its result
            _result(ctx, event["customer_id"], _rejected(ctx, event, invalid))
            return
        state = customers.get(event["customer_id"])
        into = identity.merged_into(state)
        if into and not identity.stays(event) and events.get(event["id"]) is None:
            ctx.emit(EVENTS_LOYALTY, into, identity.forward(event, into, events.get))  # moved there
            return
        budget = self._budget(ctx)
        lookup = identity.lookup_with(events.get, event)
        state = ledger.attach(state, ctx.store(LEDGER))
        try:
            out = engine.apply(state, event, ctx.config, ctx.now(), lookup, budget)
        except Refused as exc:
            out, budget = self._refused(ctx, event["customer_id"], exc)
        except Exception as exc:  # a bug must not wedge the partition on one poison event
            log.exception("event failed", extra={"event_id": event.get("id")})
            ctx.count(metrics.INTERNAL_ERRORS)
            _result(ctx, event["customer_id"], _internal_error(ctx, event, exc))
            return
        self._write(ctx, out, event["customer_id"], budget)

    def on_timer(self, ctx: Context, timer: Timer) -> None:
        kind = timer.payload.get("type")
        if kind == retention.SWEEP:
            retention.sweep(ctx, ctx.store(EVENTS))
        elif kind == agenda.WAKE:
            self._wake(ctx, timer.key)
        else:  # a timer of its own, set before the agenda (agenda.py)
            self._fire(ctx, timer)

    def _wake(self, ctx: Context, customer_id: str) -> None:
        """Fire the customer's due agenda entries, each as its own timer, then set the wake
        timer for the next. An entry leaves the agenda before it fires, as a runtime timer
        leaves its store, so one that fails is dropped, not fired again."""
        customers, now = ctx.store(CUSTOMERS), ctx.now()
        state = customers.get(customer_id)
        if state is None or identity.merged_into(state):  # merged: its timers moved with it
            return
        agenda.woken(state)
        for _ in range(agenda.MAX_PER_WAKE):
            entry = agenda.pop_due(state, now)
            if entry is None:
                break
            customers.put(customer_id, state)
            self._fire(ctx, entry)
            state = customers.get(customer_id)
            if state is None or identity.merged_into(state):
                return
        wake_at = state.get(agenda.WAKE_AT)
        agenda.arm(ctx, state, customer_id)
        if state.get(agenda.WAKE_AT) != wake_at:
            customers.put(customer_id, state)

    def _fire(self, ctx: Context, timer: Timer) -> None:
        state = ctx.store(CUSTOMERS).get(timer.key)
        if state is None or identity.merged_into(state):  # merged: its timers moved with it
            return
        budget = self._budget(ctx)
        lookup = ctx.store(EVENTS).get
        state = ledger.attach(state, ctx.store(LEDGER))
        try:
            out = engine.fire(state, timer.key, timer.payload, ctx.config, ctx.now(), lookup, budget)
        except Refused as exc:
            if exc.event is None:  # nothing to fail: as an internal error
                log.error("timer refused: %s", exc.reason, extra={"timer_id": timer.id})
                ctx.count(metrics.INTERNAL_ERRORS)
                return
            out, budget = self._refused(ctx, timer.key, exc)
        except Exception:  # as for events: log, drop this timer, keep the partition going
            log.exception("timer failed", extra={"timer_id": timer.id})
            ctx.count(metrics.INTERNAL_ERRORS)
            return
        self._write(ctx, out, timer.key, budget)

    def _refused(self, ctx: Context, customer_id: str, exc: Refused) -> tuple[engine.Output, Budget]:
        """Apply nothing of a refused input: the store hands out copies, so reading the state
        again undoes what the engine had changed before it refused."""
        assert exc.event is not None  # `apply` and `fire` name what they refuse
        state = ledger.attach(ctx.store(CUSTOMERS).get(customer_id), ctx.store(LEDGER))
        lookup = ctx.store(EVENTS).get
        out = engine.refuse(state, exc.event, exc.reason, ctx.config, ctx.now(), lookup)
        return out, self._budget(ctx)

    def _budget(self, ctx: Context) -> Budget:
        """Budgets seen exhausted are read from the store only for the budgeted campaigns an
        event reaches (one `get` each), not the whole store per event."""
        return Budget(ctx.store(BUDGETS).get)

    def _write(self, ctx: Context, out: engine.Output, customer_id: str, budget: Budget) -> None:
        agenda.update(ctx, out.state, out.cancels, out.timers)  # writes only what changed
        ctx.store(CUSTOMERS).put(customer_id, ledger.flush(out.state, ctx.store(LEDGER)))
        events, now = ctx.store(EVENTS), ctx.now()
        for event_id, rec in out.records.items():
            events.put(event_id, rec)
            if rec.get("since") == now:  # first written by this call: index it for the sweep
                events.put(retention.index_key(now, event_id), 1)
        if ctx.partition not in self.armed:
            retention.arm(ctx)
            self.armed.add(ctx.partition)
        for campaign_id, exhausted_at_budget in budget.learned.items():
            ctx.store(BUDGETS).put(exhausted_key(campaign_id), exhausted_at_budget)
        for res in out.results:
            _result(ctx, customer_id, res)
        for note in out.notifications:
            ctx.emit(NOTIFICATIONS, customer_id, note)
        if out.profile is not None:
            ctx.emit(PROFILES_CHANGES, customer_id, _profile(out, customer_id, ctx))
        self._commands(ctx, out.commands)
        metrics.observe(ctx, out.notifications, out.credited)

    def _commands(self, ctx: Context, commands: list[tuple[str, str, dict[str, Any]]]) -> None:
        for topic, key, value in commands:
            ctx.emit(topic, key, value)


def _result(ctx: Context, customer_id: str, res: dict[str, Any]) -> None:
    """Every result goes out (and is counted by status) through here."""
    ctx.emit(LOYALTY_RESULTS, customer_id, res)
    ctx.count(metrics.RESULTS, res["status"])


def _profile(out: engine.Output, customer_id: str, ctx: Context) -> dict[str, Any]:
    p = out.profile or {}
    return {
        "customer_id": customer_id,
        "anonymous": p.get("anonymous", False),
        "tier": p.get("tier"),
        "updated_at": ctx.now(),
        "config_version": ctx.config.version,
        "profile": orjson.dumps(p).decode(),
    }


def _internal_error(ctx: Context, event: dict[str, Any], exc: Exception) -> dict[str, Any]:
    """A FAILED result for an event the engine could not apply (nothing was applied)."""
    return {
        "event_id": event["id"],
        "customer_id": event["customer_id"],
        "type": event["type"],
        "kind": event.get("kind", "EVENT"),
        "status": "FAILED",
        "reason": f"internal error: {type(exc).__name__}: {exc}",
        "config_version": ctx.config.version,
        "processed_at": ctx.now(),
        "reply_to": event.get("reply_to"),
        "detail": orjson.dumps({"event": public_event(event), "duplicate": False}).decode(),
    }


def _rejected(ctx: Context, event: dict[str, Any], invalid: Invalid) -> dict[str, Any]:
    """REJECTED with ingest's field errors, nothing applied or remembered (as a 422 at ingest)."""
    return rejected_result(invalid, event["id"], event["customer_id"], event["type"], ctx.now(),
                           ctx.config.version, public_event(event), event.get("reply_to"))  # fmt: skip


def build() -> Processor:
    return LoyaltyProcessor()
