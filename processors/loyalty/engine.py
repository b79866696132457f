"""The pure loyalty engine: (state, event, program, now) -> new state and everything to emit.

No Kafka here: the processor loads the customer's state, calls `apply` or `fire` and writes the
returned `Output` (results, notifications, profile, timers, re-keyed commands, event records) in
one transaction. `lookup(event_id)` reads the partition's record of an earlier event (first
result, status, what it applied) for idempotency, fulfil, cancel and reversal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from processors.loyalty import bounds, campaigns, notices, profile, retention, tiers, wallet
from processors.loyalty import notifications as n
from processors.loyalty.adjustments import Adjustments
from processors.loyalty.badges import Badges
from processors.loyalty.bounds import Refused
from processors.loyalty.campaigns import Award, Budget, Claim, Skip, rounded
from processors.loyalty.envelope import as_json, command, public_event, uid
from processors.loyalty.holds import HELD, Holds
from processors.loyalty.identity import Identity, merged_into
from processors.loyalty.lifecycle import Lifecycle
from processors.loyalty.notices import Notices
from processors.loyalty.output import Output
from processors.loyalty.reactions import render
from processors.loyalty.rekeyed import Rekeyed
from processors.loyalty.rules import Bindings, reduce
from processors.loyalty.scheduled import Scheduled
from schemas.program import Program
from schemas.wallet import from_json

DAY_MS = 86_400_000
LINES_V = 2  # the wallet carries touched lines only (1: every open line, before the marker)
Lookup = Callable[[str], dict[str, Any] | None]
__all__ = ["Output", "Refused", "apply", "command", "fire", "new_state", "public_event", "refuse", "uid"]
# kinds with their own handler in `apply`; any other kind is an event (EVENT, REGISTER, SCHEDULED)
COMMANDS = frozenset(
    {"FULFILL", "CANCEL", "REVERSE", "CONSENT", "IDENTIFY", "ADJUST", "MERGE"}
    | {"REFERRAL_REWARD", "COUPON_GRANTED", "COUPON_REJECTED", "BUDGET_DECISION"}
)


def _part(properties: dict[str, Any], key: str, wanted: Any) -> Any:
    """properties[key] as a CEL variable (null when absent: a condition on it is false)."""
    value = properties.get(key)
    return reduce(value, wanted) if isinstance(value, dict) else value


def new_state(customer_id: str) -> dict[str, Any]:
    state: dict[str, Any] = {"customer_id": customer_id}
    wallet.new_wallet(state)
    profile.metrics(state)
    return state


class Step(Lifecycle, Rekeyed, Scheduled, Adjustments, Badges, Notices, Holds, Identity):
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
        self._held_res: dict[str, Any] | None = None
        self.out = Output(state)

    # -- small helpers -------------------------------------------------------------------
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

    def notify(self, source_id: str, event: str, data: dict[str, Any], endpoint: str | None = None) -> None:
        """Queue a webhook; `finish` adds the wallet to those that carry one, so every
        notification of a call shows the wallet after the whole call, as its result does.
        `endpoint`: pinned to that webhook (a campaign's webhook reaction)."""
        self.notes.append((source_id, event, data, endpoint))

    def _send_notes(self) -> None:
        version = self.program.version
        for source_id, event, data, endpoint in self.notes:
            note = n.notification(source_id, event, self.cid, data, self.now, version, endpoint)
            if event in n.WITH_WALLET:  # a field of its own; delivery shows it as data's last key
                note["wallet"] = self.wallet()
            self.out.notifications.append(note)
        self.notes = []

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

    def activation(self, event: dict, properties: dict, rule_profile: dict | None = None) -> Bindings:
        """CEL variables for the rules of this event, converted only when a rule reads them.
        `rule_profile`: a snapshot taken earlier (see `_earn`); else built when first read."""

        def fields(variable: str) -> Any:
            return profile.rule_fields(self.program, variable)

        def event_json() -> dict:
            ev = {k: v for k, v in event.items() if k not in ("payload", "metadata")}
            return reduce({**ev, "properties": properties}, fields("event"))

        return Bindings(
            {
                "properties": lambda: reduce(properties, fields("properties")),
                "event": event_json,
                "profile": self._rule_profile if rule_profile is None else lambda: rule_profile,
                "customer": lambda: reduce(self.state.get("customer", {}), fields("customer")),
                # Masivo's order / product, carried in properties (schemas.intake.MASIVO_KEYS)
                "order": lambda: _part(properties, "order", fields("order")),
                "product": lambda: _part(properties, "product", fields("product")),
            }
        )

    def _rule_profile(self) -> dict[str, Any]:
        """The profile as campaign and tier rules see it: only the fields they read (the
        costly ones, RFM and balances, are computed only when read)."""
        wanted = profile.rule_fields(self.program)
        traits = wanted is None or "traits" in wanted
        return profile.build(self.state, self.cid, self.program, self.now, traits, only=wanted)

    def finish(self) -> Output:
        prof, binds = self._final_profile()
        prof["traits"] = profile.traits(self.program, binds)
        prof["sequence"] = self.sequence()
        self.out.profile = prof
        self._send_notes()
        self._schedule_expiry()
        notices.arm(self.state, self.program, self.now, self.cid, self.out)
        return self.out

    def _schedule_expiry(self) -> None:
        at = wallet.next_expiry(self.state)
        if at is not None and at != self.state.get("expiry_timer_at"):
            self.out.timers.append((at, f"expiry:{self.cid}", {"type": "expiry"}))
            self.state["expiry_timer_at"] = at

    # -- events ----------------------------------------------------------------------------
    def event(self, event: dict[str, Any]) -> Output:
        props = as_json(event.get("properties"))
        self._expire()
        if self.state.get("consent", {}).get("behavioral_campaigns") is False:
            reason = "customer has not consented to behavioral_campaigns"
            res = self.result(event, "REJECTED", reason)
            self.remember(event["id"], res, "REJECTED")
            return self.finish()
        out_of_range = bounds.amount_error(props)
        if out_of_range:
            return self._fail(event, out_of_range)
        self._track(event)
        if event["type"] == "REGISTRATION" or event.get("kind") == "REGISTER":
            self._register(event)
        why = wallet.shortfall(self.state, event.get("redeem") or [])
        if why:
            return self._fail(event, why)
        if not event.get("fulfilled", True):
            return self._reserve(event)
        redemptions = self._redeem(event, event.get("redeem") or [], "REDEMPTION")
        detail = self._earn(event, props)
        self._upgrade(event)
        if self.welcome:
            data = n.registration(self.cid, self.state["customer"])
            self.notify(event["id"], n.CUSTOMER_REGISTRATION, data)
        res = self.result(event, "RESOLVED", redemptions=redemptions, **detail)
        self.remember(event["id"], res, "RESOLVED")
        return self.finish()

    def _track(self, event: dict) -> None:
        """Inactivity is measured from the last real event; its timer is moved lazily (when it
        fires early) rather than on every event."""
        days = self.program.scheduled.inactivity_days
        if days and event.get("kind") != "SCHEDULED" and "inactivity_at" not in self.state:
            at = event["issued_at"] + days * DAY_MS
            self.state["inactivity_at"] = at
            self.out.timers.append((at, f"inactivity:{self.cid}", {"type": "inactivity"}))
        self._track_tiers()

    def _track_tiers(self) -> None:
        """A customer in a tiered program has a tier (the entry one at first) and a period."""
        if self.program.tiers.levels and self.state.get("tier") is None:
            self.state["tier"] = tiers.levels(self.program)[0].id  # the entry tier, silently
        if self.program.tiers.levels and "tier_period_end" not in self.state:
            end = self.now + self.program.tiers.reporting_period_days * DAY_MS
            self.state["tier_period_end"] = end
            self.out.timers.append((end, f"tier:{self.cid}", {"type": "tier_period"}))

    def _fail(self, event: dict, reason: str) -> Output:
        res = self.result(event, "FAILED", reason)
        self.notify(event["id"], n.BEHAVIOR_EVENT_FAILED, n.behavior_event(self.cid, public_event(event)))
        self.remember(event["id"], res, "FAILED")
        return self.finish()

    def _redeem(self, event: dict, wanted: list[dict], kind: str) -> list[dict]:
        lines: list[dict] = []
        for r in wanted:
            reward, amount = r["reward_id"], r["amount"]
            lines += wallet.consume(self.state, reward, amount, event["id"], self.now, kind, self.touched)
            self.changed()
        if lines and kind == "REDEMPTION":
            self.notify(event["id"], n.CUSTOMER_REDEMPTION, n.lines(self.cid, lines))
        return lines

    def _earn(self, event: dict, props: dict) -> dict[str, Any]:
        """Count the event, run every triggered campaign and credit the awards."""
        if event.get("kind") != "SCHEDULED":
            profile.record(self.state, event, props)
        # Rules see the profile before this event's rewards: snapshot the few fields they read
        # now (a plain dict, cheap), convert it to CEL only if a rule actually reads it. Credits
        # change only scalars the snapshot copied (balances, period_points), not its objects.
        snapshot = self._rule_profile() if profile.rule_fields(self.program) != {} else None
        act = self.activation(event, props, snapshot)
        applied, skipped, accs = [], [], []
        held = 0  # budgeted awards waiting for their campaign's partition (holds.py)
        mult = tiers.multiplier(self.program, self.state.get("tier"))
        for outcome in campaigns.evaluate(self.program, event, self.state, act, self.budget):
            if isinstance(outcome, Award):
                if self._hold(event, outcome, mult, len(accs) + held):  # decided elsewhere
                    held += 1
                    continue
                line = self._credit(event, outcome, mult, len(accs) + held)
                if line:
                    accs.append(line)
                reacted = self._react(event, outcome, act, counted=line is None)
                if line or reacted:
                    applied.append({**outcome.explain(), **reacted})
            elif isinstance(outcome, Claim):
                self._claim(event, outcome, props)
                applied.append(
                    {
                        "campaign_id": outcome.campaign_id,
                        "kind": "coupon",
                        "code": outcome.code,
                        "pending": "global coupon claim",
                    }
                )
            elif isinstance(outcome, Skip):
                skipped.append(
                    {
                        "campaign_id": outcome.campaign_id,
                        "reason": outcome.reason,
                        "failed": outcome.failed,
                        **outcome.info,
                    }
                )
        progress = self._achievements(event, act)
        if accs:
            self.notify(event["id"], n.CUSTOMER_ACCUMULATION, n.lines(self.cid, accs))
        detail: dict[str, Any] = {"rules_applied": applied, "accumulations": accs, "rules_skipped": skipped}
        if progress:
            detail["achievements"] = progress
        if self.badge_changes:
            detail["badges"] = list(self.badge_changes)
        return detail

    def _react(self, event: dict, award: Award, act: Bindings, counted: bool) -> dict[str, Any]:
        """A fired campaign's other reactions: its badge and its webhook call. `counted`: no
        points were credited, so the firing counts toward the per-customer limit here."""
        campaign = campaigns.by_id(self.program)[award.campaign_id]
        out: dict[str, Any] = {}
        if campaign.award_badge is None and campaign.webhook is None:
            return out
        if counted:
            campaigns.counted(self.state, self.program, campaign.id, event, +1)
        if campaign.award_badge is not None:
            self._campaign_badge(event, campaign.id, campaign.award_badge, counted)
            out["badge_id"] = campaign.award_badge
        hook = campaign.webhook
        if hook is not None:
            credited = {
                "id": campaign.id,
                "amount": 0.0 if counted else award.amount,
                "reward_id": award.reward_id,
            }
            binds = Bindings({**act.factories, "campaign": lambda: credited})
            errors: list[str] = []
            payload = render(hook.payload, binds, errors)
            self.notify(f"{event['id']}:{campaign.id}", hook.event, payload, hook.endpoint)
            out["webhook"] = {"endpoint": hook.endpoint, "event": hook.event, "errors": errors}
        return out

    def _credit(self, event: dict, award: Award, mult: float, index: int) -> dict | None:
        campaign = campaigns.by_id(self.program)[award.campaign_id]
        if campaign.tier_multipliers:
            award.multiplier = mult
        amount = award.amount * award.multiplier
        bounds.check_award(campaign.id, award.reward_id, amount, self._held(award.reward_id))
        amount = rounded(amount, self.program.rounding)
        if amount <= 0:
            return None
        award.amount = amount
        reward = next((r for r in self.program.rewards if r.id == award.reward_id), None)
        days = reward.expires_after_days if reward else None
        exp = self.now + days * DAY_MS if days else None
        line = wallet.line(
            "ACCUMULATION",
            amount,
            award.reward_id,
            event["id"],
            self.now,
            index,
            award.campaign_id,
            award.rule,
            exp,
        )
        wallet.accumulate(self.state, line, self.touched)
        self.changed()
        self.out.credited.append(line)
        campaigns.counted(self.state, self.program, award.campaign_id, event, +1)
        self._after_credit(event, award)
        return line

    def _after_credit(self, event: dict, award: Award) -> None:
        """What a credited award adds besides its line (also for a granted budgeted one)."""
        if award.reward_id == wallet.POINTS:
            profile.metrics(self.state)["period_points"] += award.amount
        if award.kind == "coupon":
            code = award.info.get("code", "")
            self.notify(
                f"{event['id']}:{code}",
                n.COUPON_REDEMPTION,
                n.coupon(self.cid, award.campaign_id, code),
            )

    def _held(self, reward_id: str) -> float:
        """What a credit adds to, for the balance bound: lifetime points (never below the
        points balance; O(1) on the hot path) or the balance of another reward."""
        if reward_id == wallet.POINTS:
            return self.state["lifetime"]
        return wallet.balance(self.state).get(reward_id, 0.0)

    # -- tiers -----------------------------------------------------------------------------
    def _tier_target(self) -> Any:
        self.final = None  # state changed since any earlier build
        _, binds = self._final_profile()
        return tiers.qualify(self.program, binds)

    def _upgrade(self, event: dict) -> None:
        """Upgrade at once when the post-event profile qualifies for a higher tier. The
        profile built here is kept for `finish` (state does not change in between)."""
        prof, binds = self._final_profile()
        if not self.program.tiers.levels:
            return
        old = tiers.find(self.program, self.state.get("tier"))
        new = tiers.qualify(self.program, binds, old.level if old else -1)
        if new is None:
            return
        self.state["tier"] = prof["tier"] = new.id
        self.final = (prof, profile.bindings(self.program, prof))
        data = tiers.change(self.cid, old, new, "EVENT", event["id"], event["type"])
        self.notify(event["id"], n.TIER_UPGRADE, data)

    def _final_profile(self) -> tuple[dict[str, Any], Bindings]:
        if self.final is None:
            prof = profile.build(self.state, self.cid, self.program, self.now, with_traits=False)
            self.final = (prof, profile.bindings(self.program, prof))
        return self.final

    def _downgrade(self, triggered_by: str, event_id: str | None, event_type: str | None) -> None:
        old = tiers.find(self.program, self.state.get("tier"))
        new = self._tier_target()
        if old is None or (new is not None and new.level >= old.level):
            return
        self.state["tier"] = new.id if new else None
        self.final = None
        data = tiers.change(self.cid, old, new, triggered_by, event_id, event_type)
        self.notify(event_id or uid("tier", self.cid, self.now), n.TIER_DOWNGRADE, data)

    # -- registration, consent, identity ------------------------------------------------
    def _register(self, event: dict) -> None:
        payload = as_json(event.get("payload"))
        customer = payload.get("customer") or {}
        self.state["customer"] = {**self.state.get("customer", {}), **customer}
        self.state["anonymous"] = bool(payload.get("anonymous", False))
        self.state.setdefault("registered_at", event["issued_at"])
        if customer.get("tags"):
            self.state["tags"] = list(customer["tags"])
        self.welcome = not payload.get("migrated")
        self._schedule_dates()
        codes = {self.cid, customer.get("referral_code")} - {None, ""}
        for code in sorted(codes):
            cmd = command(
                "REFERRAL_CODE",
                self.cid,
                "REGISTRATION",
                self.now,
                id=uid("code", code),
                referral_code=code,
            )
            self.out.commands.append(("loyalty.referrals", code, cmd))
        if event.get("referral_code"):
            cmd = command(
                "REFERRAL_CLAIM",
                self.cid,
                "REGISTRATION",
                self.now,
                id=uid("refclaim", event["referral_code"], self.cid),
                referral_code=event["referral_code"],
                target_event_id=event["id"],
            )
            self.out.commands.append(("loyalty.referrals", event["referral_code"], cmd))

    def consent(self, event: dict) -> Output:
        """Purposes (and vendors) given are set, those left out keep their value; the consent
        record's other fields (consent_string, version, consent_timestamp) are replaced when
        given. The purposes stay a flat map in `consent`, which rules and audiences read."""
        payload = as_json(event.get("payload"))
        self.state["consent"] = {**self.state.get("consent", {}), **(payload.get("purposes") or {})}
        record = {k: payload[k] for k in profile.CONSENT_RECORD if payload.get(k) is not None}
        if record or payload.get("vendors"):
            known = self.state.get("consent_record", {})
            vendors = {**known.get("vendors", {}), **(payload.get("vendors") or {})}
            self.state["consent_record"] = {**known, **record, "vendors": vendors}
        res = self.result(event, "RESOLVED")
        self.remember(event["id"], res, "RESOLVED")
        return self.finish()

    def refused(self, event: dict, reason: str) -> Output:
        """The output for an input refused mid-way (bounds.Refused), built on the state as it
        was before it: a FAILED result with the reason and nothing applied."""
        if event.get("kind", "EVENT") in COMMANDS:
            return self._command_failed(event, reason)
        if event.get("kind") == "SCHEDULED":
            self._rearm(event["type"])  # the timer that produced it has fired
        return self._fail(event, reason)

    def identify(self, event: dict) -> Output:
        """Mark the same id known; with `new_id`, move the anonymous customer there (identity.py)."""
        if as_json(event.get("payload")).get("new_id") or merged_into(self.state):
            return self.identify_anonymous(event)
        self.state["anonymous"] = False
        res = self.result(event, "RESOLVED")
        self.remember(event["id"], res, "RESOLVED")
        return self.finish()


def _touched_at_start(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Nothing yet, except once per customer whose state predates the bounded wallet: then
    every open line, so the sink's `wallet_lines` (`?lines=true`) start complete."""
    if state.get("lines_v") == LINES_V:
        return {}
    state["lines_v"] = LINES_V
    return {b["id"]: b for b in state["buckets"]}


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
    kind = event.get("kind", "EVENT")
    handler = {
        "FULFILL": step.fulfil,
        "CANCEL": lambda e: step.release(e, e.get("target_event_id") or "", "CANCELLED"),
        "REVERSE": step.reverse,
        "CONSENT": step.consent,
        "IDENTIFY": step.identify,
        "ADJUST": step.adjust,
        "REFERRAL_REWARD": step.referral_reward,
        "COUPON_GRANTED": step.coupon_decision,
        "COUPON_REJECTED": step.coupon_decision,
        "BUDGET_DECISION": step.budget_decision,
        "MERGE": step.merge,
    }.get(kind, step.event)
    try:
        out = handler(event)
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
    return _once(step.refused(event, reason), event)


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
    return Step(state, program, now, lookup, budget or Budget()).fire(payload)


def _duplicate(state: dict, prior: dict, event: dict) -> Output:
    first = dict(prior["result"])
    detail = orjson.loads(first["detail"])
    if "wallet" not in first:  # an event record stored before the Wallet record (v1)
        first["wallet"] = from_json(detail.pop("wallet", None))
    detail["duplicate"] = True
    first["detail"] = orjson.dumps(detail).decode()
    first["reply_to"] = event.get("reply_to")
    return Output(state, results=[first])
