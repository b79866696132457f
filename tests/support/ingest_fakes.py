"""In-memory stand-ins for Kafka, PostgreSQL and the processor, shared by the ingest unit and
integration tests (support, not a test module: it holds no tests)."""

from __future__ import annotations

from typing import Any

from ingest.lookup import StoreUnavailable
from plumbing.producer import Delivered, Unavailable
from schemas.codec import decode
from schemas.program import EventType, Program

PROGRAM = Program(
    version=3,
    event_types=[
        EventType(
            name="PURCHASE",
            schema={
                "type": "object",
                "properties": {"amount": {"type": "number", "minimum": 0}},
                "required": ["amount"],
            },
        ),
        EventType(name="PAGE_VIEW", path="tracking"),
        EventType(name="REVIEW", schema={"type": "object"}),
    ],
)


class FakeProducer:
    """Acknowledges instantly (or fails, to simulate an unreachable broker)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.down = False
        self.on_send = None  # callback(record) e.g. to play the loyalty processor

    def _one(self, topic: str, key: str, value: bytes) -> Delivered | Exception:
        if self.down:
            return Unavailable("Kafka did not acknowledge in time")
        record = decode(value)  # an Event, or an AdminAudit entry (direct points)
        self.sent.append((topic, key, record))
        if self.on_send and "kind" in record:
            self.on_send(record)
        return Delivered(f"test.{topic}", 0, len(self.sent) - 1)

    async def send(self, topic: str, key: str, value: bytes, headers=None) -> Delivered:
        outcome = self._one(topic, key, value)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def send_many(self, messages):
        return [self._one(*m) for m in messages]


class FakeLookup:
    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.wallets: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}  # customer id -> {customer, wallet}
        self.pages: dict[str, list[dict[str, Any]]] = {}  # history kind -> the rows of one page
        self.asked: list[tuple[str, str, Any]] = []  # (kind, customer id, Page) per history read
        self.badge_rows: dict[str, list[dict[str, Any]]] = {}  # customer id -> customer_badges rows
        self.down = False

    async def event(self, event_id: str):
        if self.down:
            raise StoreUnavailable("down")
        return self.events.get(event_id)

    async def wallet(self, customer_id: str):
        if self.down:
            raise StoreUnavailable("down")
        return self.wallets.get(customer_id)

    async def customer(self, customer_id: str):
        if self.down:
            raise StoreUnavailable("down")
        return self.customers.get(customer_id)

    async def badges(self, customer_id: str, revoked: bool = False):
        if self.down:
            raise StoreUnavailable("down")
        return [r for r in self.badge_rows.get(customer_id, []) if revoked or r["count"] > 0]

    async def history(self, kind: str, customer_id: str, page: Any):
        """The stored page as is (paging and filters are SQL: tests/integration/test_ingest_history.py)."""
        if self.down:
            raise StoreUnavailable("down")
        self.asked.append((kind, customer_id, page))
        return self.pages.get(kind, []), "next" if self.pages.get(kind) else None
