"""DRY_RUN: run one event through the real step on the partition that owns the customer, against
the customer's real state, and answer what would happen, changing nothing.

Ingest (ingest/dry_run.py) sends `DRY_RUN` on events.loyalty, keyed by the customer id, so it
queues behind that customer's earlier events and sees their effect. Its `payload` carries the
event (as ingest built it); its `id` is the request id, `reply_to` the waiting ingest instance.
The processor's own event path (`LoyaltyProcessor._event`: validation, merges, engine, budget
bookkeeping) runs on a `DryContext`: every store is an `Overlay` (reads through to the real
store, including the open transaction's writes; writes stay in the overlay) and every emit,
timer and counter is captured instead of done. The overlay is then dropped and one reply record
goes to `loyalty.dry_run.replies` (key = request id) through the real context, so it commits with
the input offset like any output: exactly one reply per DRY_RUN, no changelog record, no result,
no notification.

A budgeted award is held for its campaign's partition (awards.hold); here that partition's
decision is taken on an overlay of this partition's `budgets` store: exact when the campaign's
key lands on this partition (its ledger is here), else the budget is taken as not spent
(`budgets[].exact` false). Referral and coupon claims decided on another partition are listed
in `pending`, not followed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson

from processors.loyalty import retention, tiers
from processors.loyalty.budgets import Budgets
from processors.loyalty.envelope import DRY_RUN, as_json
from processors.runtime.api import Context, Store, Timer
from processors.runtime.partitioner import partition_for
from schemas.codec import default_codec
from schemas.topics import (
    CAMPAIGN_BUDGETS,
    EVENTS_LOYALTY,
    LOYALTY_DRY_RUN_REPLIES,
    LOYALTY_RESULTS,
    NOTIFICATIONS,
    PROFILES_CHANGES,
    schema_for,
)

log = logging.getLogger(__name__)
Emitted = tuple[str, str, dict[str, Any]]
MAX_HOPS = 16  # budget decision rounds (one per held event); more would be a loop
_GONE = object()


class Overlay:
    """A copy-on-write view of a store: reads see the base store (and what this overlay wrote),
    writes and deletes stay here. Values are kept encoded, so, as the real store does, every
    `get` hands out a fresh copy (the processor relies on it to undo a refused event)."""

    def __init__(self, base: Store) -> None:
        self.base = base
        self.writes: dict[str, bytes | None] = {}

    def get(self, key: str, default: Any = None) -> Any:
        raw = self.writes.get(key, _GONE)
        if raw is _GONE:
            return self.base.get(key, default)
        return default if raw is None else orjson.loads(raw)

    def put(self, key: str, value: Any) -> None:
        self.writes[key] = orjson.dumps(value)

    def delete(self, key: str) -> None:
        self.writes[key] = None

    def range(self, start: str | None = None, end: str | None = None) -> Iterator[tuple[str, Any]]:
        """The base's items in [start, end) with this overlay's writes and deletes merged in."""
        lo = start or ""
        mine = sorted((k, v) for k, v in self.writes.items() if k >= lo and (end is None or k < end))
        i = 0
        for key, value in self.base.range(start, end):
            while i < len(mine) and mine[i][0] < key:
                if mine[i][1] is not None:
                    yield mine[i][0], orjson.loads(mine[i][1])
                i += 1
            if i < len(mine) and mine[i][0] == key:
                raw = mine[i][1]
                i += 1
                if raw is None:
                    continue
                value = orjson.loads(raw)
            yield key, value
        for key, raw in mine[i:]:
            if raw is not None:
                yield key, orjson.loads(raw)


class DryContext:
    """The context a dry run's handler sees: the real partition, program and clock; stores
    are overlays; emits, timers and counters are captured, never done."""

    def __init__(self, real: Context, outputs: list[str]) -> None:
        self.real = real
        self.partition = real.partition
        self.outputs = outputs
        self.stores: dict[str, Overlay] = {}
        self.emitted: list[Emitted] = []
        self.timers: list[tuple[int, str, str | None]] = []
        self.cancels: list[str] = []

    @property
    def config(self) -> Any:
        return self.real.config

    def now(self) -> int:
        return self.real.now()

    def store(self, name: str) -> Overlay:
        if name not in self.stores:
            self.stores[name] = Overlay(self.real.store(name))
        return self.stores[name]

    def emit(self, topic: str, key: str, value: dict[str, Any]) -> None:
        if topic not in self.outputs:
            raise ValueError(f"{topic!r} is not an output of the loyalty processor")
        self.emitted.append((topic, key, value))

    def schedule(self, at: int, key: str, payload: dict[str, Any], timer_id: str | None = None) -> str:
        self.timers.append((int(at), key, timer_id))
        return timer_id or f"dry-run:{len(self.timers)}"

    def cancel(self, timer_id: str) -> None:
        self.cancels.append(timer_id)

    def timer(self, timer_id: str) -> Timer | None:
        """As the real context sees it (a timer this dry run cancelled included)."""
        return self.real.timer(timer_id)

    def count(self, counter: Any, *labels: str, amount: float = 1.0) -> None:
        """Nothing is counted: a dry run is not an event processed."""


def run(processor: Any, ctx: Context, cmd: dict[str, Any]) -> None:
    """Answer one DRY_RUN: the event through the processor's own path on overlays, then one
    reply record (or, for a customer merged into another, the DRY_RUN forwarded there)."""
    event = _as_event(as_json(cmd.get("payload")).get("event") or {})
    cid = event.get("customer_id") or cmd["customer_id"]
    dry = DryContext(ctx, processor.outputs)
    state = dry.store("customers").get(cid)
    prior = dry.store("events").get(event.get("id", ""))
    already = prior is not None and not retention.expired(prior, ctx.now(), ctx.config)
    armed = set(processor.armed)  # the retention sweep it may arm here is not armed for real
    try:
        processor._event(dry, event)
        budgets = _decide_budgets(processor, dry)
    except Exception as exc:  # a bug: answer it at once (nothing real was touched), no DLQ
        log.exception("dry run failed", extra={"event_id": event.get("id")})
        error = f"{type(exc).__name__}: {exc}"
        failed = {"request_id": cmd["id"], "reply_to": cmd.get("reply_to"), "error": error}
        ctx.emit(LOYALTY_DRY_RUN_REPLIES, cmd["id"], failed)
        return
    finally:
        processor.armed = armed
    forwarded = _forwarded(dry.emitted, event)
    if forwarded is not None:  # merged into another customer: ask that customer's partition
        into, moved = forwarded
        ctx.emit(EVENTS_LOYALTY, into, {**cmd, "customer_id": into, "payload": _payload(moved)})
        return
    after = dry.store("customers").get(cid)
    program = ctx.config
    reply = {
        "request_id": cmd["id"],
        "reply_to": cmd.get("reply_to"),
        "customer_id": cid,
        "event_id": event.get("id"),
        "partition": ctx.partition,
        "program_version": program.version,
        "processed_at": ctx.now(),
        "found": state is not None,
        "already_processed": already,
        "tier": {
            "before": tiers.info(tiers.find(program, state.get("tier"))) if state else None,
            "after": tiers.info(tiers.find(program, after.get("tier"))) if after else None,
        },
        "results": [_as_record(t, v) for t, _, v in dry.emitted if t == LOYALTY_RESULTS],
        "notifications": [_as_record(t, v) for t, _, v in dry.emitted if t == NOTIFICATIONS],
        "budgets": budgets,
        "pending": [_pending(t, k, v) for t, k, v in dry.emitted if t not in SHOWN],
    }
    ctx.emit(LOYALTY_DRY_RUN_REPLIES, cmd["id"], reply)


SHOWN = frozenset({LOYALTY_RESULTS, NOTIFICATIONS, PROFILES_CHANGES, CAMPAIGN_BUDGETS})


def _decide_budgets(processor: Any, dry: DryContext) -> list[dict[str, Any]]:
    """Take the decisions the campaigns' partitions would take for the held awards (on an
    overlay of this partition's budgets) and run them back in, as Kafka would deliver them."""
    decided: list[dict[str, Any]] = []
    done = 0
    for _ in range(MAX_HOPS):
        asks = [e for e in dry.emitted[done:] if e[0] == CAMPAIGN_BUDGETS]
        done = len(dry.emitted)
        if not asks:
            break
        for _, campaign_id, ask in asks:
            answers = Budgets(dry.store("budgets")).reserve(_as_event(ask), dry.config, dry.now())
            for topic, key, value in answers:
                if topic != EVENTS_LOYALTY:  # CAMPAIGN_BUDGET_EXHAUSTED: shown with the rest
                    dry.emit(topic, key, value)
                    continue
                decision = as_json(value.get("payload"))
                exact = partition_for(campaign_id.encode(), processor.partitions) == dry.partition
                decided.append({"campaign_id": campaign_id, "requested": decision.get("requested"),
                                "granted": decision.get("granted"), "exact": exact})  # fmt: skip
                processor._event(dry, _as_event(value))
    return decided


def _forwarded(emitted: list[Emitted], event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(the customer, the event) when the processor forwarded the event to a merged-into id."""
    if any(t == LOYALTY_RESULTS for t, _, _ in emitted):
        return None
    for topic, key, value in emitted:
        if topic == EVENTS_LOYALTY and value.get("id") == event.get("id"):
            return key, value
    return None


def _pending(topic: str, key: str, value: dict[str, Any]) -> dict[str, Any]:
    """A record for another partition (a referral or coupon claim) whose outcome is not shown."""
    return {"topic": topic, "key": key, "kind": value.get("kind"), "type": value.get("type")}


def _as_event(value: dict[str, Any]) -> dict[str, Any]:
    """An Event as the processor receives it from Kafka: the Avro record, defaults filled."""
    return _as_record(EVENTS_LOYALTY, value)


def _as_record(topic: str, value: dict[str, Any]) -> dict[str, Any]:
    """`value` as a consumer of `topic` would read it (its Avro record, defaults filled)."""
    codec, schema = default_codec(), schema_for(topic)
    return codec.decode(codec.encode(schema, value), schema) if schema else value


def _payload(event: dict[str, Any]) -> str:
    return orjson.dumps({"event": event}).decode()


def command(request_id: str, event: dict[str, Any], reply_to: str | None) -> dict[str, Any]:
    """The DRY_RUN record for `event` (an Event record as ingest built it)."""
    return {
        "id": request_id,
        "kind": DRY_RUN,
        "customer_id": event["customer_id"],
        "type": event["type"],
        "issued_at": event["issued_at"],
        "received_at": event["received_at"],
        "reply_to": reply_to,
        "payload": _payload(event),
    }
