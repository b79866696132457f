"""Budgeted awards held on the customer's partition until the campaign's partition decides.

An award of a campaign with a `budget` is not credited at once: `_hold` counts it toward the
customer's limits, sends BUDGET_RESERVE (key = campaign id) to campaigns.budgets and keeps the
event's result, and the event records it would write, in the customer's state under `held`
(they commit with the request, so a crash loses neither). Each BUDGET_DECISION that comes back
credits what was granted (and fires the campaign's badge and webhook) or lists the refusal in
`rules_skipped` and gives the count back; after the last one the event's result goes out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from processors.loyalty import bounds, campaigns, wallet
from processors.loyalty import notifications as n
from processors.loyalty.campaigns import Award, rounded
from processors.loyalty.envelope import as_json, command, uid
from schemas.topics import CAMPAIGN_BUDGETS

if TYPE_CHECKING:
    from processors.loyalty.engine import Output

HELD = "held"  # state key: event id -> what is waiting for budget decisions


class Holds:
    """Mixin of `engine.Step`."""

    def _holds(self) -> dict[str, dict[str, Any]]:
        return self.state.setdefault(HELD, {})

    def is_held(self, event_id: str) -> bool:
        """The event (or the command that applied it) is waiting for a budget decision."""
        held = self.state.get(HELD) or {}
        return event_id in held or any(h.get("input_id") == event_id for h in held.values())

    def _hold(self, event: dict, award: Award, mult: float, slot: int) -> bool:
        """Hold a budgeted award (True) rather than crediting it; False: not budgeted, or
        nothing to credit (the caller credits or skips it as usual)."""
        campaign = campaigns.by_id(self.program)[award.campaign_id]
        if campaign.budget is None:
            return False
        if campaign.tier_multipliers:
            award.multiplier = mult
        amount = award.amount * award.multiplier
        bounds.check_award(campaign.id, award.reward_id, amount, self._held(award.reward_id))
        amount = rounded(amount, self.program.rounding)
        if amount <= 0:
            return False
        award.amount = amount
        key = event["id"]
        entry = self._holds().get(key)
        if entry is None or self.held_key != key:
            entry = {"input_id": self.fresh or key, "event": _stored(event), "waiting": {}, "records": []}
            self._holds()[key] = entry
            self.held_key = key
        entry["waiting"][campaign.id] = {"slot": slot, "award": _award_json(award)}
        campaigns.counted(self.state, self.program, campaign.id, event, +1)  # a hold counts
        cmd = command(
            "BUDGET_RESERVE",
            self.cid,
            event["type"],
            self.now,
            id=uid("budget", campaign.id, key, slot),
            target_event_id=key,
            payload={"campaign_id": campaign.id, "amount": amount},
        )
        self.out.commands.append((CAMPAIGN_BUDGETS, campaign.id, cmd))
        return True

    def _stash_result(self, res: dict[str, Any], status: str) -> bool:
        """Keep the result of an event with held awards (True) instead of sending it."""
        if self.held_key is None or status != "RESOLVED":
            return False
        entry = self._holds()[self.held_key]
        entry["result"] = {k: v for k, v in res.items() if k != "wallet"}
        entry["touched"] = sorted(self.touched)  # the lines its wallet would have shown
        self._held_res = res
        return True

    def _stash_record(self, event_id: str, res: dict, status: str, extra: dict[str, Any]) -> bool:
        """Keep an event record until the result it holds is final (True)."""
        if self.held_key is None or status != "RESOLVED":
            return False
        own = res is self._held_res
        stored = {"id": event_id, "status": status, "extra": extra, "own": own}
        if not own:
            stored["result"] = res
        self._holds()[self.held_key]["records"].append(stored)
        return True

    # -- the decision coming back ------------------------------------------------------
    def budget_decision(self, cmd: dict) -> Output:
        payload = as_json(cmd.get("payload"))
        key, campaign_id = cmd.get("target_event_id") or "", payload.get("campaign_id") or ""
        entry = self._holds().get(key)
        if payload.get("exhausted") and payload.get("budget") is not None:
            self.budget.learn(campaign_id, payload["budget"])
        if entry is None or campaign_id not in entry["waiting"]:
            return self.out  # decided already (or never asked): nothing to apply
        waiting = entry["waiting"].pop(campaign_id)
        event = entry["event"]
        granted = float(payload.get("granted") or 0.0)
        if granted > 0:
            entry.setdefault("granted", []).append({**waiting, "granted": granted})
        else:
            campaigns.counted(self.state, self.program, campaign_id, event, -1)
            reason = payload.get("reason") or campaigns.BUDGET_EXHAUSTED
            refused = {"campaign_id": campaign_id, "reason": reason, "failed": False}
            entry.setdefault("refused", []).append(refused)
        if entry["waiting"]:
            return self.out  # more decisions to come
        del self._holds()[key]
        return self._release_held(key, entry)

    def _release_held(self, key: str, entry: dict[str, Any]) -> Output:
        event = entry["event"]
        buckets = {b["id"]: b for b in self.state["buckets"]}
        for bucket_id in entry.get("touched", []):  # the held result's wallet shows them now
            if bucket_id in buckets:
                self.touched.setdefault(bucket_id, buckets[bucket_id])
        self.changed()
        applied, lines = [], []
        act = self.activation(event, as_json(event.get("properties")))
        for g in sorted(entry.get("granted", []), key=lambda g: g["slot"]):
            award = Award(**g["award"])
            award.amount = g["granted"]
            line = self._credit_granted(event, award, g["slot"])
            lines.append(line)
            reacted = self._react(event, award, act, counted=False)
            applied.append({**award.explain(), **reacted})
        if lines:
            self.notify(f"{key}:budget", n.CUSTOMER_ACCUMULATION, n.lines(self.cid, lines))
        self._upgrade(event)
        final = self._final_result(entry, applied, lines)
        self.out.results.append(final)
        for rec in entry["records"]:
            extra = dict(rec["extra"])
            if "accumulations" in extra:
                extra["accumulations"] = [*extra["accumulations"], *lines]
            if "badges" in extra:
                extra["badges"] = [*extra["badges"], *self.badge_changes]
            self.remember(rec["id"], final if rec["own"] else rec["result"], rec["status"], **extra)
        if entry["input_id"] not in self.out.records:  # the command that applied it, if any
            record = {"result": final, "status": final["status"], "since": self.now}
            self.out.records[entry["input_id"]] = record
        return self.finish()

    def _final_result(self, entry: dict, applied: list[dict], lines: list[dict]) -> dict[str, Any]:
        res = dict(entry["result"])
        body = orjson.loads(res["detail"])
        body["rules_applied"] = [*body.get("rules_applied", []), *applied]
        body["accumulations"] = [*body.get("accumulations", []), *lines]
        body["rules_skipped"] = [*body.get("rules_skipped", []), *entry.get("refused", [])]
        if self.badge_changes:
            body["badges"] = [*body.get("badges", []), *self.badge_changes]
        res["detail"] = orjson.dumps(body).decode()
        res["points"] = sum(a["amount"] for a in body["accumulations"] if a["reward_id"] == wallet.POINTS)
        res["processed_at"] = self.now
        res["wallet"] = self.wallet()
        return res

    def _credit_granted(self, event: dict, award: Award, slot: int) -> dict[str, Any]:
        """Credit a granted (possibly partial) award; its count was taken when it was held."""
        reward = next((r for r in self.program.rewards if r.id == award.reward_id), None)
        days = reward.expires_after_days if reward else None
        exp = self.now + days * 86_400_000 if days else None
        line = wallet.line(
            "ACCUMULATION", award.amount, award.reward_id, event["id"], self.now, slot,
            award.campaign_id, award.rule, exp,
        )  # fmt: skip
        wallet.accumulate(self.state, line, self.touched)
        self.changed()
        self.out.credited.append(line)
        self._after_credit(event, award)
        return line


def _award_json(award: Award) -> dict[str, Any]:
    return {
        "campaign_id": award.campaign_id,
        "kind": award.kind,
        "reward_id": award.reward_id,
        "amount": award.amount,
        "rule": award.rule,
        "formula": award.formula,
        "multiplier": award.multiplier,
        "info": award.info,
    }


def _stored(event: dict[str, Any]) -> dict[str, Any]:
    """The event as kept while held: what crediting and the campaign's reactions read."""
    return {k: v for k, v in event.items() if k != "metadata"}
