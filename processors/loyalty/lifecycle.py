"""Event lifecycle on a customer's partition: reservations, fulfil, cancel, expiry, reversal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from processors.loyalty import bounds, campaigns, profile, retention, wallet
from processors.loyalty import notifications as n
from processors.loyalty.envelope import as_json, public_event
from processors.loyalty.records import applied
from schemas import event_times

if TYPE_CHECKING:
    from processors.loyalty.engine import Output

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


class Lifecycle:
    """Mixin of `engine.Step`."""

    def _reserve(self, event: dict) -> Output:
        lines = self._redeem(event, event.get("redeem") or [], "RESERVATION")
        expires = self.now + self._hold_ms(event)
        self.state["reservations"][event["id"]] = {"lines": lines, "expires_at": expires}
        self.changed()
        if lines:
            self.notify(event["id"], n.REWARDS_RESERVATION, n.lines(self.cid, lines))
        self.out.timers.append(
            (
                expires,
                f"reservation:{event['id']}",
                {"type": "reservation", "event_id": event["id"]},
            )
        )
        res = self.result(event, "PENDING", redemptions=lines, expires_at=expires)
        self.remember(event["id"], res, "PENDING")
        return self.finish()

    def _hold_ms(self, event: dict) -> int:
        """How long a reservation waits for its fulfil: the event's `reserve` days, else the
        program's `fulfilment.expire_after_hours` (24 by default)."""
        days = event.get("reserve")
        if days:
            return days * DAY_MS
        return round(self.program.fulfilment.expire_after_hours * HOUR_MS)

    def _target(self, cmd: dict, *wanted: str) -> tuple[dict | None, str | None]:
        target_id = cmd.get("target_event_id")
        if target_id and self.is_held(target_id):
            return None, f"event {target_id} is waiting for a campaign budget decision"
        record = self.out.records.get(target_id or "") or (self.lookup(target_id) if target_id else None)
        if record is not None and retention.expired(record, self.now, self.program):
            return None, retention.too_old(target_id or "", self.program)
        record = applied(record) if record is not None else None
        if record is None or record["event"].get("customer_id") != self.cid:
            days = self.program.retention.events_days
            window = f"or older than the {days}-day retention window"
            return None, f"unknown event {target_id} for customer {self.cid} ({window})"
        if record["status"] not in wanted:
            return None, f"event {target_id} is {record['status']}, not {' or '.join(wanted)}"
        return record, None

    def _command_failed(self, cmd: dict, reason: str) -> Output:
        self.result(cmd, "FAILED", reason)
        return self.finish()

    def fulfil(self, cmd: dict) -> Output:
        record, why = self._target(cmd, "PENDING")
        if record is None:
            return self._command_failed(cmd, why or "")
        event = record["event"]
        out_of_range = bounds.amount_error(as_json(event.get("properties")))
        if out_of_range:  # a reservation made before amounts were bounded
            return self._command_failed(cmd, out_of_range)
        reservation = self.state["reservations"].pop(event["id"], {"lines": []})
        self.changed()
        self.out.cancels.append(f"reservation:{event['id']}")
        redemptions = [{**ln, "kind": "REDEMPTION"} for ln in reservation["lines"]]
        if redemptions:
            self.notify(event["id"], n.CUSTOMER_REDEMPTION, n.lines(self.cid, redemptions))
        detail = self._earn(event, as_json(event.get("properties")))
        self._upgrade(event)
        self.notify(cmd["id"], n.BEHAVIOR_EVENT_FULFILLED, n.behavior_event(self.cid, public_event(event)))
        times = event_times.after(record, "RESOLVED", self.now)
        self.result(
            {**event, "kind": "FULFILL", "reply_to": cmd.get("reply_to")},
            "RESOLVED",
            redemptions=redemptions,
            command_id=cmd["id"],
            times=times,
            **detail,
        )
        self.remember(
            event["id"],
            record["result"],
            "RESOLVED",
            times=times,
            accumulations=detail["accumulations"],
            redemptions=redemptions,
            achievements=detail.get("achievements", []),
            badges=detail.get("badges", []),
        )
        return self.finish()

    def release(self, cmd: dict | None, event_id: str, status: str) -> Output:
        """Cancel (a command) or expire (a timer) an open reservation."""
        record = self.out.records.get(event_id) or self.lookup(event_id)
        if self.is_held(event_id):  # being fulfilled: its budget decision is on the way
            record = None
        if record is None or record.get("status") != "PENDING":
            if cmd is None:
                return self.out  # already fulfilled or cancelled: nothing to expire
            return self._command_failed(cmd, f"event {event_id} has no open reservation")
        event = applied(record)["event"]
        reservation = self.state["reservations"].pop(event_id, {"lines": []})
        self.changed()
        wallet.restore(self.state, reservation["lines"], self.touched)
        self.changed()
        self.out.cancels.append(f"reservation:{event_id}")
        data = n.lines(self.cid, reservation["lines"])
        self.notify(f"{event_id}:{status}", n.REWARDS_RESERVATION_CANCELLED, data)
        shown = {**event, "kind": cmd["kind"] if cmd else "EXPIRE"}
        shown["reply_to"] = cmd.get("reply_to") if cmd else None
        reason = as_json(cmd.get("payload")).get("reason") if cmd else "reservation expired"
        times = event_times.after(record, status, self.now)
        self.result(
            shown,
            status,
            reason,
            released=reservation["lines"],
            command_id=cmd["id"] if cmd else None,
            times=times,
        )
        self.remember(event_id, record["result"], status, times=times)
        return self.finish()

    def reverse(self, cmd: dict) -> Output:
        """Take a resolved event back; an unfulfilled one (an open reservation) is cancelled
        instead, as Masivo does: nothing was granted, its reserved rewards are released."""
        record, why = self._target(cmd, "RESOLVED", "PENDING")
        if record is None:
            return self._command_failed(cmd, why or "")
        event = record["event"]
        if record["status"] == "PENDING":
            return self.release(cmd, event["id"], "CANCELLED")
        if event.get("kind") == "ADJUST":
            why = f"event {event['id']} is an adjustment: correct it with an opposite adjustment"
            return self._command_failed(cmd, why)
        lines = [
            wallet.reverse_accumulation(self.state, acc, cmd["id"], self.now, i, self.touched)
            for i, acc in enumerate(record["accumulations"])
        ]
        self.changed()
        for acc in record["accumulations"]:
            if acc["reward_id"] == wallet.POINTS:
                profile.metrics(self.state)["period_points"] -= acc["amount"]
            if acc.get("campaign_id"):  # a reversed reward no longer counts toward the limits
                campaigns.counted(self.state, self.program, acc["campaign_id"], event, -1)
        wallet.restore(self.state, record["redemptions"], self.touched)
        self.changed()
        if event.get("kind") != "SCHEDULED":
            profile.record(self.state, event, as_json(event.get("properties")), sign=-1)
        revoked = self._take_back(event, record)
        self._downgrade("REVERSAL", event["id"], event["type"])
        reason = as_json(cmd.get("payload")).get("reason")
        times = event_times.after(record, "REVERSED", self.now)
        self.result(
            {**event, "kind": "REVERSE", "reply_to": cmd.get("reply_to")},
            "REVERSED",
            reason,
            reversals=lines,
            restored=record["redemptions"],
            command_id=cmd["id"],
            times=times,
            **({"badges": revoked} if revoked else {}),
        )
        self.remember(event["id"], record["result"], "REVERSED", times=times)
        return self.finish()
