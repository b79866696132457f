"""POST /behavior/events?dry_run=true: what an event would do to its customer as they are now,
asked of the partition that owns the customer, without changing anything.

Ingest validates the event as a real send, then publishes a `DRY_RUN` command carrying it on
events.loyalty, keyed by the customer id: it lands on the partition that owns the customer,
behind that customer's earlier events. The loyalty processor runs the event through its real
step against the customer's real state on a throwaway overlay of its stores
(processors/loyalty/dry_run.py) and answers with one record on `loyalty.dry_run.replies` (key =
request id, `reply_to` = this worker). Each worker tails that topic from the end with one
consumer, started on its first dry run, and completes the request waiting on that id; no answer
within the timeout is a 504.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson

from ingest.errors import ApiError
from ingest.replies import OnDemand, ReplyHub, TopicTail
from ingest.simulate import iso, notification_view, result_view
from plumbing.producer import EventProducer, Unavailable
from processors.loyalty.dry_run import command
from schemas.settings import Settings
from schemas.topics import EVENTS_LOYALTY, LOYALTY_DRY_RUN_REPLIES

log = logging.getLogger(__name__)


class ReplyListener(TopicTail):
    """Tails loyalty.dry_run.replies and hands the replies addressed to this worker to the
    hub, by request id."""

    topic = LOYALTY_DRY_RUN_REPLIES
    batch = 100

    def handle(self, value: bytes | None) -> None:
        try:
            reply = orjson.loads(value or b"null")
        except orjson.JSONDecodeError:
            return
        if isinstance(reply, dict) and reply.get("reply_to") == self.instance_id:
            self.hub.complete(str(reply.get("request_id")), reply)


class DryRuns:
    """A worker's dry runs: the futures waiting by request id and, once the first dry run asks
    for it, the one reply listener of the process (`listen=False`: replies are completed on
    `hub` by the caller, as unit tests do)."""

    def __init__(self, settings: Settings, instance_id: str, listen: bool = True) -> None:
        self.instance_id = instance_id
        self.hub = ReplyHub()
        self.listen = listen
        self.replies = OnDemand((lambda: ReplyListener(settings, instance_id, self.hub)) if listen else None)

    async def started(self) -> None:
        await self.replies.started("the dry-run replies")

    def close(self) -> None:
        self.replies.close()

    async def ask(self, producer: EventProducer, encode: Any, record: dict[str, Any], timeout: float) -> dict:
        """Send the DRY_RUN for `record` and wait for its reply: 503 when Kafka does not take
        the command, 504 when no reply comes within `timeout` seconds."""
        await self.started()  # inside the caller's 503 on Unavailable
        request_id = str(uuid.uuid4())
        future = self.hub.register(request_id)
        try:
            value = encode(command(request_id, record, self.instance_id))
            await producer.send(EVENTS_LOYALTY, record["customer_id"], value)
        except Unavailable:
            self.hub.forget(request_id, future)
            raise
        reply = await self.hub.wait(future, request_id, timeout)
        if reply is None:
            raise ApiError(504, f"dry run: no answer from the loyalty processor within {timeout:g} s "
                                "(is it running, and caught up with the customer's partition?)")  # fmt: skip
        if reply.get("error"):
            raise ApiError(500, f"dry run failed in the loyalty processor: {reply['error']}")
        return reply


def answer(record: dict[str, Any], reply: dict[str, Any] | None) -> dict[str, Any]:
    """The HTTP answer: the event's own result on top, everything it would emit below. `reply`
    None: a tracking-only event, which the loyalty processor never sees."""
    head: dict[str, Any] = {
        "event_id": record["id"],
        "customer_id": record["customer_id"],
        "type": record["type"],
        "at": iso(record["received_at"]),
    }
    if reply is None:
        return {**head, "program_version": None, "tracking_only": True, "results": [], "notifications": []}
    results = [result_view(r) for r in reply["results"]]
    own = next((r for r in results if r["event_id"] == record["id"]), results[0] if results else {})
    return {
        **head,
        "customer_id": reply["customer_id"],  # merged into another id: that customer's answer
        "program_version": reply["program_version"],
        "tracking_only": False,
        **{k: own.get(k) for k in ("status", "reason", "points", "rules_applied", "rules_skipped")},
        **{k: own.get(k, []) for k in ("accumulations", "redemptions")},
        "tier": reply["tier"],
        "wallet": own.get("wallet", {}),
        "results": results,
        "notifications": [notification_view(n) for n in reply["notifications"]],
        "budgets": reply["budgets"],
        "pending": reply["pending"],
        "state": {
            "found": reply["found"],
            "already_processed": reply["already_processed"],
            "partition": reply["partition"],
        },
    }
