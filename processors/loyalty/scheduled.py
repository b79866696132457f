"""Timers of a customer: points expiry, tier reporting periods, the scheduled internal
events BIRTHDAY, ANNIVERSARY and INACTIVITY that campaigns can reward, and the notices before
loss (notices.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from processors.loyalty import profile, wallet
from processors.loyalty.bounds import Refused
from processors.loyalty.envelope import command, uid
from processors.loyalty.notices import EXPIRING, TIER_WARNING

if TYPE_CHECKING:
    from processors.loyalty.engine import Output

DAY_MS = 86_400_000
SCHEDULED_TYPES = {"birthday": "BIRTHDAY", "anniversary": "ANNIVERSARY", "inactivity": "INACTIVITY"}


class Scheduled:
    """Mixin of `engine.Step`."""

    def _expire(self) -> list[dict]:
        lines = wallet.expire(self.state, self.now, self.touched)
        self.changed()
        self.expired += lines
        for ln in lines:
            if ln["reward_id"] == wallet.POINTS:
                self.state.setdefault("expired", 0.0)
                self.state["expired"] += ln["amount"]
        return lines

    def fire(self, payload: dict[str, Any]) -> Output:
        kind = payload.get("type")
        if kind == "reservation":
            return self.release(None, payload["event_id"], "EXPIRED")
        if kind == "expiry":
            self.state.pop("expiry_timer_at", None)
            lines = self._expire()
            if lines:
                ev = command("EXPIRE", self.cid, "POINTS_EXPIRY", self.now)
                self.result(ev, "RESOLVED", expirations=lines)
            return self.finish()
        if kind == "tier_period":
            return self._period_end()
        if kind in (EXPIRING, TIER_WARNING):
            return self._fire_notice(kind)
        if kind in SCHEDULED_TYPES:
            return self._scheduled(kind)
        return self.out

    def _period_end(self) -> Output:
        """The closing period's metrics decide the tier for the next one (a gold tier on
        `period_purchases >= 50` is kept by 50 purchases in the period), then they restart."""
        self._downgrade("CRON_DOWNGRADE", None, None)
        m = profile.metrics(self.state)
        m.update(period_purchases=0, period_spend=0.0, period_points=0.0)
        self.final = None  # the profile the check built still counts the closing period
        if not self.program.tiers.levels:  # tiers were removed: stop the period timer
            self.state.pop("tier_period_end", None)
            return self.finish()
        end = self.now + self.program.tiers.reporting_period_days * DAY_MS
        self.state["tier_period_end"] = end
        self.out.timers.append((end, f"tier:{self.cid}", {"type": "tier_period"}))
        return self.finish()

    def _scheduled(self, kind: str) -> Output:
        if kind == "inactivity":
            self.state.pop("inactivity_at", None)
            days = self.program.scheduled.inactivity_days
            last = profile.metrics(self.state)["last_event_at"]
            if not days or last is None:
                return self.out
            due = last + days * DAY_MS
            if due > self.now:  # active since the timer was set: wait again
                self.state["inactivity_at"] = due
                self.out.timers.append((due, f"inactivity:{self.cid}", {"type": "inactivity"}))
                return self.out
        type_ = SCHEDULED_TYPES[kind]
        event = command("SCHEDULED", self.cid, type_, self.now, id=uid(self.cid, type_, self.now))
        try:
            out = self.event(event)
        except Refused as exc:
            exc.event = event
            raise
        if kind != "inactivity":
            self._schedule_dates()
        return out

    def _rearm(self, type_: str) -> None:
        """What firing a scheduled event's timer does to the state, without the event
        (it was refused): the next birthday/anniversary, or inactivity measured afresh."""
        if type_ == SCHEDULED_TYPES["inactivity"]:
            self.state.pop("inactivity_at", None)
        else:
            self._schedule_dates()

    def _schedule_dates(self) -> None:
        sched = self.program.scheduled
        birthday = self.state.get("customer", {}).get("birthday")
        if sched.birthday and birthday:
            at = next_date(birthday, self.now)
            if at:
                self.out.timers.append((at, f"birthday:{self.cid}", {"type": "birthday"}))
        if sched.anniversary and self.state.get("registered_at"):
            start = datetime.fromtimestamp(self.state["registered_at"] / 1000, UTC).date()
            at = next_date(start.isoformat(), self.now)
            if at:
                self.out.timers.append((at, f"anniversary:{self.cid}", {"type": "anniversary"}))


def next_date(iso: str, now: int) -> int | None:
    """Epoch ms of the next yearly occurrence (midnight UTC) of a YYYY-MM-DD or MM-DD date."""
    try:
        month, day = (int(x) for x in iso[-5:].split("-"))
        today = datetime.fromtimestamp(now / 1000, UTC).date()
        for year in (today.year, today.year + 1):
            try:
                d = date(year, month, day)
            except ValueError:  # 29 February
                d = date(year, 3, 1)
            at = int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)
            if at > now:
                return at
    except ValueError:
        return None
    return None
