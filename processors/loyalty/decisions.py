"""BUDGET_DECISION: a campaign partition's answer (budgets.py) to an award held on this
customer's partition (awards.hold). Each decision credits what was granted (and fires the
campaign's badge and webhook) or lists the refusal in `rules_skipped` and gives the count back;
after the last one the event's held result and records go out."""

from __future__ import annotations

from typing import Any

import orjson

from processors.loyalty import awards, campaigns, tiering, wallet
from processors.loyalty import notifications as n
from processors.loyalty.campaigns import Award
from processors.loyalty.core import Step
from processors.loyalty.envelope import as_json
from processors.loyalty.output import Output


def budget_decision(step: Step, cmd: dict) -> Output:
    payload = as_json(cmd.get("payload"))
    key, campaign_id = cmd.get("target_event_id") or "", payload.get("campaign_id") or ""
    entry = step.holds().get(key)
    if payload.get("exhausted") and payload.get("budget") is not None:
        step.budget.learn(campaign_id, payload["budget"])
    if entry is None or campaign_id not in entry["waiting"]:
        return step.out  # decided already (or never asked): nothing to apply
    waiting = entry["waiting"].pop(campaign_id)
    event = entry["event"]
    granted = float(payload.get("granted") or 0.0)
    if granted > 0:
        entry.setdefault("granted", []).append({**waiting, "granted": granted})
    else:
        campaigns.counted(step.state, step.program, campaign_id, event, -1)
        reason = payload.get("reason") or campaigns.BUDGET_EXHAUSTED
        refused = {"campaign_id": campaign_id, "reason": reason, "failed": False}
        entry.setdefault("refused", []).append(refused)
    if entry["waiting"]:
        return step.out  # more decisions to come
    del step.holds()[key]
    return _release_held(step, key, entry)


def _release_held(step: Step, key: str, entry: dict[str, Any]) -> Output:
    event = entry["event"]
    for bucket_id in entry.get("touched", []):  # the held result's wallet shows them now
        bucket = wallet.find(step.state, bucket_id)
        if bucket is not None:
            step.touched.setdefault(bucket_id, bucket)
    step.changed()
    applied, lines = [], []
    act = step.activation(event, as_json(event.get("properties")))
    for g in sorted(entry.get("granted", []), key=lambda g: g["slot"]):
        award = Award(**g["award"])
        award.amount = g["granted"]
        line = awards.credit_granted(step, event, award, g["slot"])
        lines.append(line)
        reacted = awards.react(step, event, award, act, counted=False)
        applied.append({**award.explain(), **reacted})
    if lines:
        step.notify(f"{key}:budget", n.CUSTOMER_ACCUMULATION, n.lines(step.cid, lines))
    tiering.upgrade(step, event)
    final = _final_result(step, entry, applied, lines)
    step.out.results.append(final)
    for rec in entry["records"]:
        extra = dict(rec["extra"])
        if "accumulations" in extra:
            extra["accumulations"] = [*extra["accumulations"], *lines]
        if "badges" in extra:
            extra["badges"] = [*extra["badges"], *step.badge_changes]
        step.remember(rec["id"], final if rec["own"] else rec["result"], rec["status"], **extra)
    if entry["input_id"] not in step.out.records:  # the command that applied it, if any
        record = {"result": final, "status": final["status"], "since": step.now}
        step.out.records[entry["input_id"]] = record
    return step.finish()


def _final_result(step: Step, entry: dict, applied: list[dict], lines: list[dict]) -> dict[str, Any]:
    res = dict(entry["result"])
    body = orjson.loads(res["detail"])
    body["rules_applied"] = [*body.get("rules_applied", []), *applied]
    body["accumulations"] = [*body.get("accumulations", []), *lines]
    body["rules_skipped"] = [*body.get("rules_skipped", []), *entry.get("refused", [])]
    if step.badge_changes:
        body["badges"] = [*body.get("badges", []), *step.badge_changes]
    res["detail"] = orjson.dumps(body).decode()
    res["points"] = sum(a["amount"] for a in body["accumulations"] if a["reward_id"] == wallet.POINTS)
    res["processed_at"] = step.now
    res["wallet"] = step.wallet()
    return res
