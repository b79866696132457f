"""`loyalty process router`: the HTTP ingest path for producers that write JSON to Kafka.

Each record on `events.inbound` is a POST /behavior/events body. It is checked and built by
schemas.intake.build_event, the function ingest uses, so both ways in accept and refuse the
same events with the same field errors; a valid one goes to events.loyalty or events.tracking
(by its type's path), an invalid one becomes a REJECTED result on loyalty.results. Bytes that
are not a JSON object never reach `process`: the runtime dead-letters them to router.dlq.
Stateless: no stores, so it scales to as many instances as events.inbound has partitions.
"""

from __future__ import annotations

from typing import Any

from processors.runtime.api import Context, Processor, Record
from schemas.event_types import TypeRegistry
from schemas.intake import (
    EventLimits,
    Invalid,
    build_event,
    event_id,
    rejected_result,
    storable,
    topic_for,
)
from schemas.topics import EVENTS_INBOUND, EVENTS_LOYALTY, EVENTS_TRACKING, LOYALTY_RESULTS


class RouterProcessor(Processor):
    name = "router"
    inputs = [EVENTS_INBOUND]
    outputs = [EVENTS_LOYALTY, EVENTS_TRACKING, LOYALTY_RESULTS]
    route_by_key = False  # stateless: it re-keys every event by customer_id itself

    def __init__(self, limits: EventLimits | None = None) -> None:
        self.types = TypeRegistry()  # compiled per program version, as ingest's
        self.limits = limits or EventLimits.from_env()

    def process(self, ctx: Context, record: Record) -> None:
        try:
            event = build_event(record.value, self.types.of(ctx.config), ctx.now(), self.limits)
        except Invalid as exc:
            result = rejected(exc, record, ctx.now(), ctx.config.version)
            ctx.emit(LOYALTY_RESULTS, result["customer_id"], result)
            return
        ctx.emit(topic_for(event), event["customer_id"], event)


def rejected(exc: Invalid, record: Record, now_ms: int, config_version: int) -> dict[str, Any]:
    """The REJECTED result of an inbound body, named as far as its fields allow: the id is the
    event's own (uuid5 of customer_id:reference) when both are text, so a producer can look
    it up; the customer is the body's, else the record key."""
    body = record.value
    customer = _text(body.get("customer_id")) or record.key or ""
    reference = _text(body.get("reference"))
    event_type = _text(body.get("type")) or ""
    echo = {
        "customer_id": storable(customer),
        "type": storable(event_type),
        "reference": None if reference is None else storable(reference),
        "received_at": now_ms,
    }
    return rejected_result(
        exc, event_id(customer, reference), customer, event_type, now_ms, config_version, echo
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def build() -> Processor:
    return RouterProcessor()
