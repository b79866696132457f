"""Retry policy: duration parsing, retry tiers, response classification and the next step."""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass

from schemas.program import Delivery
from schemas.topics import retry_topic

RETRY_PREFIX = retry_topic("")  # every tier's topic is RETRY_PREFIX + its name ("delivery.retry.5s")

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str | float | int) -> float:
    """Seconds from "200ms", "5s", "1m", "2h", "1d" or a bare number of seconds."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"bad duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@dataclass(frozen=True)
class Tier:
    name: str
    delay_s: float

    @property
    def topic(self) -> str:
        return retry_topic(self.name)


def tiers(delivery: Delivery) -> list[Tier]:
    """The configured tiers in order; the tier name is its duration text (topic suffix)."""
    return [Tier(name, parse_duration(name)) for name in delivery.retry_tiers]


def tier_of(topic: str) -> str | None:
    """The tier name of a logical retry topic (`delivery.retry.5s` -> `5s`); None for any other
    topic. A tier no longer configured keeps its name: its records are still delivered."""
    return topic[len(RETRY_PREFIX) :] if topic.startswith(RETRY_PREFIX) else None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


@dataclass(frozen=True)
class Step:
    """Where a failed message goes next: a tier topic with a not-before time, or the DLQ."""

    tier: Tier | None
    not_before_ms: int | None = None

    @property
    def dlq(self) -> bool:
        return self.tier is None


def next_step(
    attempt: int,
    tier_list: list[Tier],
    now_ms: int,
    retry_after: float | None,
    max_retry_after_s: float = 300.0,
) -> Step:
    """After failed attempt number `attempt` (1-based), retry on tier `attempt - 1` or DLQ.

    A Retry-After (capped at `max_retry_after_s`) longer than that tier's delay picks the first
    later tier whose delay covers it, else the last tier. The not-before time is always
    now + the chosen tier's own delay, so each tier topic holds messages of one delay only:
    its FIFO order is its due order and a paused partition head never blocks a message that
    is due earlier (another endpoint's, say).
    """
    index = attempt - 1
    if index >= len(tier_list):
        return Step(None)
    wanted = min(retry_after or 0.0, max_retry_after_s)
    later = tier_list[index:]
    tier = next((t for t in later if t.delay_s >= wanted), later[-1])
    return Step(tier, now_ms + int(tier.delay_s * 1000))


def shed_step(tier_list: list[Tier], came_from: str | None, now_ms: int) -> Step:
    """Where a message goes that its endpoint's full queue sheds (no attempt made): the tier
    after the one it was read from (the first from an input topic), the last at most. A
    message shed again each time it comes back waits longer each time, so a dead endpoint's
    overflow is moved once per tier, then once per last-tier delay, not every few seconds."""
    if not tier_list:
        return Step(None)
    names = [t.name for t in tier_list]
    index = names.index(came_from) + 1 if came_from in names else 0
    tier = tier_list[min(index, len(tier_list) - 1)]
    return Step(tier, now_ms + int(tier.delay_s * 1000))


def is_success(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def is_redirect(status: int | None) -> bool:
    """3xx: never followed (see docs/delivery.md), dead-lettered at once."""
    return status is not None and 300 <= status < 400


def honours_retry_after(status: int | None) -> bool:
    return status in (429, 503)
