"""Time ranges the pages offer, and the bucket each one is charted with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)  # date_bin origin: buckets align the same in SQL and Python


@dataclass(frozen=True)
class Range:
    """A window back from now and the chart bucket: about 30-100 points per chart whatever the span."""

    name: str
    span: timedelta
    bucket: timedelta

    @property
    def bucket_label(self) -> str:
        minutes = int(self.bucket.total_seconds() // 60)
        if minutes < 60:
            return f"{minutes} min"
        if minutes < 1440:
            return f"{minutes // 60} h"
        return f"{minutes // 1440} d"

    def buckets(self, now: datetime) -> list[datetime]:
        """Every bucket start from now - span to now, aligned like date_bin(bucket, ts, ORIGIN)."""
        first = self.floor(now - self.span)
        count = int((self.floor(now) - first) / self.bucket) + 1
        return [first + i * self.bucket for i in range(count)]

    def floor(self, ts: datetime) -> datetime:
        return ORIGIN + ((ts - ORIGIN) // self.bucket) * self.bucket


RANGES = {
    r.name: r
    for r in (
        Range("1h", timedelta(hours=1), timedelta(minutes=1)),
        Range("24h", timedelta(hours=24), timedelta(minutes=15)),
        Range("7d", timedelta(days=7), timedelta(hours=2)),
        Range("30d", timedelta(days=30), timedelta(days=1)),
    )
}
DEFAULT_RANGE = "24h"


def parse_range(name: str | None) -> Range:
    """The named range (default 24h); ValueError names the ones offered."""
    try:
        return RANGES[name or DEFAULT_RANGE]
    except KeyError:
        raise ValueError(f"range must be one of {', '.join(RANGES)}") from None
