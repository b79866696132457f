"""Commands on a customer's partition: FULFILL, CANCEL and REVERSE (on an earlier event),
CONSENT and IDENTIFY (with `new_id`: seal this anonymous customer and send everything it holds
to the known id as one MERGE, applied by merges.py; identity.py). ADJUST is adjustments.py."""

from __future__ import annotations

from processors.loyalty import (
    badges,
    bounds,
    campaigns,
    earn,
    profile,
    reservations,
    retention,
    tiering,
    wallet,
)
from processors.loyalty import notifications as n
from processors.loyalty.core import HELD, Step
from processors.loyalty.envelope import as_json, command, public_event, uid
from processors.loyalty.identity import KEPT, MERGED_INTO, MOVED, merged_into, rehomed, transfer
from processors.loyalty.output import Output
from processors.loyalty.records import applied
from schemas import event_times
from schemas.topics import EVENTS_LOYALTY


def _target(step: Step, cmd: dict, *wanted: str) -> tuple[dict | None, str | None]:
    target_id = cmd.get("target_event_id")
    if target_id and step.is_held(target_id):
        return None, f"event {target_id} is waiting for a campaign budget decision"
    record = step.out.records.get(target_id or "") or (step.lookup(target_id) if target_id else None)
    if record is not None and retention.expired(record, step.now, step.program):
        return None, retention.too_old(target_id or "", step.program)
    record = applied(record) if record is not None else None
    if record is None or record["event"].get("customer_id") != step.cid:
        days = step.program.retention.events_days
        window = f"or older than the {days}-day retention window"
        return None, f"unknown event {target_id} for customer {step.cid} ({window})"
    if record["status"] not in wanted:
        return None, f"event {target_id} is {record['status']}, not {' or '.join(wanted)}"
    return record, None


def fulfil(step: Step, cmd: dict) -> Output:
    record, why = _target(step, cmd, "PENDING")
    if record is None:
        return step.failed(cmd, why or "")
    event = record["event"]
    out_of_range = bounds.amount_error(as_json(event.get("properties")))
    if out_of_range:  # a reservation made before amounts were bounded
        return step.failed(cmd, out_of_range)
    reservation = step.state["reservations"].pop(event["id"], {"lines": []})
    step.changed()
    step.out.cancels.append(f"reservation:{event['id']}")
    redemptions = [{**ln, "kind": "REDEMPTION"} for ln in reservation["lines"]]
    if redemptions:
        step.notify(event["id"], n.CUSTOMER_REDEMPTION, n.lines(step.cid, redemptions))
    detail = earn.earn(step, event, as_json(event.get("properties")))
    tiering.upgrade(step, event)
    step.notify(cmd["id"], n.BEHAVIOR_EVENT_FULFILLED, n.behavior_event(step.cid, public_event(event)))
    times = event_times.after(record, "RESOLVED", step.now)
    step.result(
        {**event, "kind": "FULFILL", "reply_to": cmd.get("reply_to")},
        "RESOLVED",
        redemptions=redemptions,
        command_id=cmd["id"],
        times=times,
        **detail,
    )
    step.remember(
        event["id"],
        record["result"],
        "RESOLVED",
        times=times,
        accumulations=detail["accumulations"],
        redemptions=redemptions,
        achievements=detail.get("achievements", []),
        badges=detail.get("badges", []),
    )
    return step.finish()


def cancel(step: Step, cmd: dict) -> Output:
    """Cancel an open reservation (its event's id is the command's `target_event_id`)."""
    return reservations.release(step, cmd, cmd.get("target_event_id") or "", "CANCELLED")


def reverse(step: Step, cmd: dict) -> Output:
    """Take a resolved event back; an unfulfilled one (an open reservation) is cancelled
    instead, as Masivo does: nothing was granted, its reserved rewards are released."""
    record, why = _target(step, cmd, "RESOLVED", "PENDING")
    if record is None:
        return step.failed(cmd, why or "")
    event = record["event"]
    if record["status"] == "PENDING":
        return reservations.release(step, cmd, event["id"], "CANCELLED")
    if event.get("kind") == "ADJUST":
        why = f"event {event['id']} is an adjustment: correct it with an opposite adjustment"
        return step.failed(cmd, why)
    lines = [
        wallet.reverse_accumulation(step.state, acc, cmd["id"], step.now, i, step.touched)
        for i, acc in enumerate(record["accumulations"])
    ]
    step.changed()
    for acc in record["accumulations"]:
        if acc["reward_id"] == wallet.POINTS:
            profile.metrics(step.state)["period_points"] -= acc["amount"]
        if acc.get("campaign_id"):  # a reversed reward no longer counts toward the limits
            campaigns.counted(step.state, step.program, acc["campaign_id"], event, -1)
    wallet.restore(step.state, record["redemptions"], step.touched)
    step.changed()
    if event.get("kind") != "SCHEDULED":
        profile.record(step.state, event, as_json(event.get("properties")), sign=-1)
    revoked = badges.take_back(step, event, record)
    tiering.downgrade(step, "REVERSAL", event["id"], event["type"])
    reason = as_json(cmd.get("payload")).get("reason")
    times = event_times.after(record, "REVERSED", step.now)
    step.result(
        {**event, "kind": "REVERSE", "reply_to": cmd.get("reply_to")},
        "REVERSED",
        reason,
        reversals=lines,
        restored=record["redemptions"],
        command_id=cmd["id"],
        times=times,
        **({"badges": revoked} if revoked else {}),
    )
    step.remember(event["id"], record["result"], "REVERSED", times=times)
    return step.finish()


def consent(step: Step, event: dict) -> Output:
    """Purposes (and vendors) given are set, those left out keep their value; the consent
    record's other fields (consent_string, version, consent_timestamp) are replaced when
    given. The purposes stay a flat map in `consent`, which rules and audiences read."""
    payload = as_json(event.get("payload"))
    step.state["consent"] = {**step.state.get("consent", {}), **(payload.get("purposes") or {})}
    record = {k: payload[k] for k in profile.CONSENT_RECORD if payload.get(k) is not None}
    if record or payload.get("vendors"):
        known = step.state.get("consent_record", {})
        vendors = {**known.get("vendors", {}), **(payload.get("vendors") or {})}
        step.state["consent_record"] = {**known, **record, "vendors": vendors}
    res = step.result(event, "RESOLVED")
    step.remember(event["id"], res, "RESOLVED")
    return step.finish()


def identify(step: Step, event: dict) -> Output:
    """Mark the same id known; with `new_id`, move the anonymous customer there (identity.py)."""
    if as_json(event.get("payload")).get("new_id") or merged_into(step.state):
        return _identify_anonymous(step, event)
    step.state["anonymous"] = False
    res = step.result(event, "RESOLVED")
    step.remember(event["id"], res, "RESOLVED")
    return step.finish()


def _identify_anonymous(step: Step, cmd: dict) -> Output:
    """Seal this anonymous customer and send everything it holds to `new_id` (MERGE)."""
    new_id = str(as_json(cmd.get("payload")).get("new_id") or "")
    into = step.state.get(MERGED_INTO)
    if into is not None and into == new_id:  # a repeat with another id: nothing moves twice
        res = step.result(cmd, "RESOLVED", merged_into=into, already_merged=True)
        step.remember(cmd["id"], res, "RESOLVED")
        return _sealed_finish(step, into)
    why = _cannot_merge(step, new_id, into)
    if why:
        res = step.result(cmd, "REJECTED", why)
        step.remember(cmd["id"], res, "REJECTED")
        return _sealed_finish(step, into) if into else step.finish()
    step.expire()  # expired lines are not moved
    merge_id = uid("merge", step.cid, new_id)
    open_lines = wallet.open_lines(step.state)
    moved = [{k: v for k, v in b.items()} for b in open_lines]
    out_lines = [transfer("MERGE_OUT", b, cmd["id"], i, step.now, -1) for i, b in enumerate(moved)]
    wallet.close_all(step.state, open_lines, step.touched)  # the sink's wallet_lines show 0
    reservations = step.state["reservations"]
    records = {eid: step.lookup(eid) for eid in reservations}
    records = {eid: rehomed(r, new_id) for eid, r in records.items() if r is not None}
    step.out.cancels += [f"reservation:{eid}" for eid in reservations]
    payload = {
        "from": step.cid,
        "merge_id": merge_id,
        "buckets": moved,
        "reservations": reservations,
        "records": records,
        "event_ids": sorted({b["event_id"] for b in moved}),
        "profile": as_json(cmd.get("payload")).get("customer") or {},
        **{k: step.state[k] for k in MOVED if k in step.state},
    }
    merge = command(
        "MERGE", new_id, "IDENTIFY", step.now, id=merge_id, target_event_id=cmd["id"], payload=payload
    )
    step.out.commands.append((EVENTS_LOYALTY, new_id, merge))
    _seal(step, new_id)
    res = step.result(cmd, "RESOLVED", merged_into=new_id, merge_id=merge_id, transfers=out_lines)
    step.remember(cmd["id"], res, "RESOLVED")
    return _sealed_finish(step, new_id)


def _cannot_merge(step: Step, new_id: str, into: str | None) -> str | None:
    if into is not None:
        return f"customer {step.cid} was already merged into {into}"
    if not new_id or new_id == step.cid:
        return "new_id must name another customer"
    if not step.state.get("anonymous"):
        return f"customer {step.cid} is not an anonymous customer (register it with anonymous: true)"
    if step.state.get(HELD):
        return f"customer {step.cid} is waiting for campaign budget decisions: retry the identify"
    return None


def _seal(step: Step, new_id: str) -> None:
    """Empty the state in place (the engine's Output holds this dict): only the identity
    and the pointer stay; the wallet and metrics start over empty."""
    for key in [k for k in step.state if k not in KEPT]:
        del step.state[key]
    wallet.new_wallet(step.state)
    profile.metrics(step.state)
    step.state["anonymous"] = True  # never evaluated by audiences (their memberships end)
    step.state[MERGED_INTO] = new_id
    step.changed()


def _sealed_finish(step: Step, into: str) -> Output:
    out = step.finish()
    if out.profile is not None:
        out.profile[MERGED_INTO] = into  # the sink's customers.merged_into, journeys' exit
    return out
