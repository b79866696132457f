"""The partition's record of an event (the `events` store): its first result and status.

A duplicate is answered with the first result; fulfil, cancel and reverse need what the event
applied. That is read back from the first result's detail rather than stored twice (the record
is written once per event, so its size is throughput), except what changed after the first
result (a fulfilment's accumulations, redemptions, achievement progress and badges), which is
stored beside it.
"""

from __future__ import annotations

from typing import Any

import orjson


def applied(record: dict[str, Any]) -> dict[str, Any]:
    """The record with `event`, `accumulations` and `redemptions` filled in: stored ones win
    (after a fulfilment, and in records written before they were derived)."""
    detail = orjson.loads(record["result"]["detail"])
    return {
        **record,
        "event": record.get("event") or detail["event"],
        "accumulations": record.get("accumulations", detail.get("accumulations", [])),
        "redemptions": record.get("redemptions", detail.get("redemptions", [])),
        "achievements": record.get("achievements", detail.get("achievements", [])),
        "badges": record.get("badges", detail.get("badges", [])),
    }
