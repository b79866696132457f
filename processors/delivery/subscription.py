"""What delivery's consumer reads: its input topics plus the retry topic of every configured tier.

The tiers come from the program, which changes live, so a new tier's topic is created here on
the fly (the stack creates only the default tiers' topics) and the consumer is subscribed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer

from plumbing.topic_admin import ensure_topics
from processors.delivery.policy import tiers
from processors.delivery.routing import INPUT_TOPICS
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import TopicSpec, topic_name

log = logging.getLogger(__name__)


class Subscription:
    """Keeps `consumer` subscribed to the topics the current program needs."""

    def __init__(
        self, settings: Settings, consumer: Consumer, on_revoke: Callable[[Any, list[Any]], None]
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._on_revoke = on_revoke
        self._topics: list[str] = []  # logical names subscribed to

    async def update(self, program: Program) -> None:
        """(Re)subscribe to the inputs plus `program`'s retry tiers, creating missing tier topics.
        Does nothing when the topics are the same (a program change that kept its tiers)."""
        tier_topics = [t.topic for t in tiers(program.delivery)]
        wanted = [*INPUT_TOPICS, *tier_topics]
        if wanted == self._topics:
            return
        specs = [TopicSpec(t, "Notification") for t in tier_topics]
        await asyncio.to_thread(ensure_topics, self._settings, specs)
        physical = [topic_name(t, self._settings) for t in wanted]
        await asyncio.to_thread(self._await_metadata, physical)
        self._consumer.subscribe(physical, on_assign=_on_assign, on_revoke=self._on_revoke)
        self._topics = wanted

    async def follow(self, program: Program) -> None:
        """`update` after a program change; a failure keeps the old subscription (logged), since
        a broker hiccup must not stop the deliveries of the tiers already read."""
        try:
            await self.update(program)
        except Exception:
            log.exception("retry tier topics not subscribed; keeping the previous tiers")

    def _await_metadata(self, topics: list[str], timeout: float = 15.0) -> None:
        """Wait until fresh topics show up in metadata: subscribing earlier leaves them
        unassigned until the next metadata refresh."""
        deadline = time.monotonic() + timeout
        for topic in topics:
            while time.monotonic() < deadline:
                meta = self._consumer.list_topics(topic, timeout=5).topics.get(topic)
                if meta and meta.error is None and meta.partitions:
                    break
                time.sleep(0.1)


def _on_assign(_consumer: Any, parts: list[Any]) -> None:
    log.info("partitions assigned", extra={"count": len(parts)})
