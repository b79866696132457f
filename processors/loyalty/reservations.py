"""Releasing an open reservation: cancelled by a command (commands.py) or expired by its timer
(timers.py). The reserved lines go back to the wallet; the event's record says why."""

from __future__ import annotations

from processors.loyalty import notifications as n
from processors.loyalty import wallet
from processors.loyalty.core import Step
from processors.loyalty.envelope import as_json
from processors.loyalty.output import Output
from processors.loyalty.records import applied
from schemas import event_times


def release(step: Step, cmd: dict | None, event_id: str, status: str) -> Output:
    """Cancel (a command) or expire (a timer) an open reservation."""
    record = step.out.records.get(event_id) or step.lookup(event_id)
    if step.is_held(event_id):  # being fulfilled: its budget decision is on the way
        record = None
    if record is None or record.get("status") != "PENDING":
        if cmd is None:
            return step.out  # already fulfilled or cancelled: nothing to expire
        return step.failed(cmd, f"event {event_id} has no open reservation")
    event = applied(record)["event"]
    reservation = step.state["reservations"].pop(event_id, {"lines": []})
    step.changed()
    wallet.restore(step.state, reservation["lines"], step.touched)
    step.changed()
    step.out.cancels.append(f"reservation:{event_id}")
    data = n.lines(step.cid, reservation["lines"])
    step.notify(f"{event_id}:{status}", n.REWARDS_RESERVATION_CANCELLED, data)
    shown = {**event, "kind": cmd["kind"] if cmd else "EXPIRE"}
    shown["reply_to"] = cmd.get("reply_to") if cmd else None
    reason = as_json(cmd.get("payload")).get("reason") if cmd else "reservation expired"
    times = event_times.after(record, status, step.now)
    step.result(
        shown,
        status,
        reason,
        released=reservation["lines"],
        command_id=cmd["id"] if cmd else None,
        times=times,
    )
    step.remember(event_id, record["result"], status, times=times)
    return step.finish()
