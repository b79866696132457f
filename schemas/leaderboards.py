"""Leaderboard periods, the contract the sink (which scores) and ingest (which serves the
current period) share: UTC calendar weeks starting on Monday (ISO 8601), UTC calendar months,
or all time (one period starting 1970-01-01)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

ALL_TIME = date(1970, 1, 1)


def period_start(period: str, at_ms: int | float) -> date:
    """The first day of the period holding `at_ms`."""
    if period == "all_time":
        return ALL_TIME
    day = datetime.fromtimestamp(at_ms / 1000, UTC).date()
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(period: str, start: date) -> date | None:
    """The first day after the period (None for all time)."""
    if period == "all_time":
        return None
    if period == "week":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
