"""The yearly scheduled events, BIRTHDAY and ANNIVERSARY: when their timers fire next."""

from __future__ import annotations

from datetime import UTC, date, datetime

from processors.loyalty.core import Step

SCHEDULED_TYPES = {"birthday": "BIRTHDAY", "anniversary": "ANNIVERSARY", "inactivity": "INACTIVITY"}


def schedule_dates(step: Step) -> None:
    sched = step.program.scheduled
    birthday = step.state.get("customer", {}).get("birthday")
    if sched.birthday and birthday:
        at = next_date(birthday, step.now)
        if at:
            step.out.timers.append((at, f"birthday:{step.cid}", {"type": "birthday"}))
    if sched.anniversary and step.state.get("registered_at"):
        start = datetime.fromtimestamp(step.state["registered_at"] / 1000, UTC).date()
        at = next_date(start.isoformat(), step.now)
        if at:
            step.out.timers.append((at, f"anniversary:{step.cid}", {"type": "anniversary"}))


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
