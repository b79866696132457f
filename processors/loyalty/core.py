"""The core of one engine call: the `Step` (the customer's state it mutates, the program, the
clock, the `Output` it accumulates) and the primitives every input path uses: the wallet
record, results, event records, webhooks, CEL variables, expiry and `finish`.

The input modules (events, commands, adjustments, timers, rekeyed, decisions, merges) are
plain functions taking a `Step`; `engine.py` picks one per input. Budgeted awards held for a
decision (awards.hold) keep the event's result and records in the state (`HELD`): `result`
and `remember` divert them there while a hold is open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from processors.loyalty import notices, profile, tiers, wallet
from processors.loyalty import notifications as n
from processors.loyalty.agenda import AGENDA
from processors.loyalty.campaigns import Budget
from processors.loyalty.envelope import public_event
from processors.loyalty.output import Output
from processors.loyalty.rules import Bindings, reduce
from schemas.program import Program

DAY_MS = 86_400_000
LINES_V = 2  # the wallet carries touched lines only (1: every open line, before the marker)
HELD = "held"  # state key: event id -> what is waiting for budget decisions (awards.hold)
Lookup = Callable[[str], dict[str, Any] | None]


def new_state(customer_id: str) -> dict[str, Any]:
    state: dict[str, Any] = {"customer_id": customer_id, AGENDA: {}}  # its timers (agenda.py)
    wallet.new_wallet(state)
    profile.metrics(state)
    return state


class Step:
    """One engine call: accumulates outputs while mutating the customer's state."""

    def __init__(self, state: dict, program: Program, now: int, lookup: Lookup, budget: Budget):
        self.state, self.program, self.now, self.lookup, self.budget = (
            state,
            program,
            now,
            lookup,
            budget,
        )
        self.cid: str = state["customer_id"]
        self.welcome = False
        self._wallet: dict[str, Any] | None = None
        self.expired: list[dict[str, Any]] = []  # lines expired on the way (timer was late)
        self.final: tuple[dict[str, Any], Bindings] | None = None  # post-event profile
        self.fresh: str | None = None  # id `apply` just looked up and found unknown
        self.notes: list[tuple[str, str, dict[str, Any], str | None]] = []  # sent by `finish`
        self._sequence: int | None = None
        self.badge_changes: list[dict[str, Any]] = []  # badges awarded or revoked by this call
        self.touched = _touched_at_start(state)  # the wallet's `lines`: buckets this call changed
        self.held_key: str | None = None  # the event whose budgeted awards this call held
        self.held_res: dict[str, Any] | None = None
        self.out = Output(state)

    # -- the wallet record and the sequence ------------------------------------------------
    def wallet(self) -> dict[str, Any]:
        """The `Wallet` record of results and notifications (schemas/wallet.py), cached until
        the next ledger change (`self.changed()`)."""
        if self._wallet is None:
            self._wallet = wallet.summary(self.state, self.cid, self.touched)
            self._wallet["sequence"] = self.sequence()
        return self._wallet

    def changed(self) -> None:
        self._wallet = None

    def sequence(self) -> int:
        """This call's number in the customer's sequence, taken once per call that emits a
        wallet or a profile: sinks keep the highest, which wall clocks of two hosts are not.
        It lives in the state, so restores and replays give the same numbers."""
        if self._sequence is None:
            self._sequence = self.state["sequence"] = self.state.get("sequence", 0) + 1
        return self._sequence

    def expire(self) -> list[dict]:
        """Expire the lines due by now (a timer may be late: every input expires first)."""
        lines = wallet.expire(self.state, self.now, self.touched)
        self.changed()
        self.expired += lines
        for ln in lines:
            if ln["reward_id"] == wallet.POINTS:
                self.state.setdefault("expired", 0.0)
                self.state["expired"] += ln["amount"]
        return lines

    # -- webhooks ------------------------------------------------------------------------
    def notify(self, source_id: str, event: str, data: dict[str, Any], endpoint: str | None = None) -> None:
        """Queue a webhook; `finish` adds the wallet to those that carry one, so every
        notification of a call shows the wallet after the whole call, as its result does.
        `endpoint`: pinned to that webhook (a campaign's webhook reaction)."""
        self.notes.append((source_id, event, data, endpoint))

    def send_notes(self) -> None:
        version = self.program.version
        for source_id, event, data, endpoint in self.notes:
            note = n.notification(source_id, event, self.cid, data, self.now, version, endpoint)
            if event in n.WITH_WALLET:  # a field of its own; delivery shows it as data's last key
                note["wallet"] = self.wallet()
            self.out.notifications.append(note)
        self.notes = []

    # -- results and event records ---------------------------------------------------------
    def result(self, event: dict, status: str, reason: str | None = None, **detail: Any) -> dict:
        accs = detail.get("accumulations", [])
        points = sum(a["amount"] for a in accs if a["reward_id"] == wallet.POINTS)
        body = {
            "rules_applied": detail.pop("rules_applied", []),
            "accumulations": accs,
            "redemptions": detail.pop("redemptions", []),
            "tier": tiers.info(tiers.find(self.program, self.state.get("tier"))),
            "event": public_event(event),
            "duplicate": False,
            **{k: v for k, v in detail.items() if k != "accumulations"},
        }
        if self.expired and "expirations" not in body:
            body["expirations"] = self.expired
        res = {
            "event_id": detail.get("target_event_id") or event["id"],
            "customer_id": self.cid,
            "type": event["type"],
            "kind": event.get("kind", "EVENT"),
            "status": status,
            "reason": reason,
            "points": points,
            "config_version": self.program.version,
            "processed_at": self.now,
            "reply_to": event.get("reply_to"),
            "detail": orjson.dumps(body).decode(),
            "wallet": self.wallet(),
        }
        if not self._stash_result(res, status):  # held: sent once the budgets are decided
            self.out.results.append(res)
        return res

    def remember(self, event_id: str, res: dict, status: str, **extra: Any) -> None:
        """The partition's record of an event: first result and current status. What the event
        applied is read back from that result (`applied`); `extra` stores only what changed
        after it (a fulfilment's accumulations and redemptions)."""
        if self._stash_record(event_id, res, status, extra):
            return
        record = self.out.records.get(event_id)
        if record is None and event_id != self.fresh:
            record = self.lookup(event_id)
        record = record or {"result": res, "since": self.now}
        record = {**record, "status": status, **extra}
        self.out.records[event_id] = record

    def failed(self, cmd: dict, reason: str) -> Output:
        """A command that cannot be applied: a FAILED result with the reason, nothing applied."""
        self.result(cmd, "FAILED", reason)
        return self.finish()

    # -- held budgeted awards (awards.hold) ----------------------------------------------
    def holds(self) -> dict[str, dict[str, Any]]:
        return self.state.setdefault(HELD, {})

    def is_held(self, event_id: str) -> bool:
        """The event (or the command that applied it) is waiting for a budget decision."""
        held = self.state.get(HELD) or {}
        return event_id in held or any(h.get("input_id") == event_id for h in held.values())

    def _stash_result(self, res: dict[str, Any], status: str) -> bool:
        """Keep the result of an event with held awards (True) instead of sending it."""
        if self.held_key is None or status != "RESOLVED":
            return False
        entry = self.holds()[self.held_key]
        entry["result"] = {k: v for k, v in res.items() if k != "wallet"}
        entry["touched"] = sorted(self.touched)  # the lines its wallet would have shown
        self.held_res = res
        return True

    def _stash_record(self, event_id: str, res: dict, status: str, extra: dict[str, Any]) -> bool:
        """Keep an event record until the result it holds is final (True)."""
        if self.held_key is None or status != "RESOLVED":
            return False
        own = res is self.held_res
        stored = {"id": event_id, "status": status, "extra": extra, "own": own}
        if not own:
            stored["result"] = res
        self.holds()[self.held_key]["records"].append(stored)
        return True

    # -- CEL variables and the profile -------------------------------------------------------
    def activation(self, event: dict, properties: dict, rule_profile: dict | None = None) -> Bindings:
        """CEL variables for the rules of this event, converted only when a rule reads them.
        `rule_profile`: a snapshot taken earlier (see `earn.earn`); else built when first read."""

        def fields(variable: str) -> Any:
            return profile.rule_fields(self.program, variable)

        def event_json() -> dict:
            ev = {k: v for k, v in event.items() if k not in ("payload", "metadata")}
            return reduce({**ev, "properties": properties}, fields("event"))

        return Bindings(
            {
                "properties": lambda: reduce(properties, fields("properties")),
                "event": event_json,
                "profile": self.rule_profile if rule_profile is None else lambda: rule_profile,
                "customer": lambda: reduce(self.state.get("customer", {}), fields("customer")),
                # Masivo's order / product, carried in properties (schemas.intake.MASIVO_KEYS)
                "order": lambda: _part(properties, "order", fields("order")),
                "product": lambda: _part(properties, "product", fields("product")),
            }
        )

    def rule_profile(self) -> dict[str, Any]:
        """The profile as campaign and tier rules see it: only the fields they read (the
        costly ones, RFM and balances, are computed only when read)."""
        wanted = profile.rule_fields(self.program)
        traits = wanted is None or "traits" in wanted
        return profile.build(self.state, self.cid, self.program, self.now, traits, only=wanted)

    def final_profile(self) -> tuple[dict[str, Any], Bindings]:
        """The profile after the call (tiers and traits read it), built once until `final` is
        reset by a change that moves it."""
        if self.final is None:
            prof = profile.build(self.state, self.cid, self.program, self.now, with_traits=False)
            self.final = (prof, profile.bindings(self.program, prof))
        return self.final

    # -- the end of every call ---------------------------------------------------------------
    def finish(self) -> Output:
        prof, binds = self.final_profile()
        prof["traits"] = profile.traits(self.program, binds)
        prof["sequence"] = self.sequence()
        self.out.profile = prof
        self.send_notes()
        self._schedule_expiry()
        notices.arm(self.state, self.program, self.now, self.cid, self.out)
        return self.out

    def _schedule_expiry(self) -> None:
        at = wallet.next_expiry(self.state)
        if at is not None and at != self.state.get("expiry_timer_at"):
            self.out.timers.append((at, f"expiry:{self.cid}", {"type": "expiry"}))
            self.state["expiry_timer_at"] = at


def _part(properties: dict[str, Any], key: str, wanted: Any) -> Any:
    """properties[key] as a CEL variable (null when absent: a condition on it is false)."""
    value = properties.get(key)
    return reduce(value, wanted) if isinstance(value, dict) else value


def _touched_at_start(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Nothing yet, except once per customer whose state predates the bounded wallet: then
    every open line, so the sink's `wallet_lines` (`?lines=true`) start complete."""
    if state.get("lines_v") == LINES_V:
        return {}
    state["lines_v"] = LINES_V
    return {b["id"]: b for b in wallet.open_lines(state)}
