"""campaign_budgets through the running sink on real Kafka and PostgreSQL: the loyalty
processor's decisions for a campaign that runs out, delivered out of order and then replayed,
leave one row with what the campaign partition spent and when it ran out."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from processors.runtime.testing import wait_for
from schemas import topics as t
from schemas.settings import Settings
from sinks import samples
from sinks.sink import Sink
from tests.support.budget_walk import walk
from tests.support.pg import committed, query, scalar

pytestmark = pytest.mark.integration

ROW = (
    "SELECT reward_id, budget, spent, remaining, exhausted_at, updated_at FROM campaign_budgets "
    "WHERE campaign_id = %s"
)


def test_the_exhausted_budget_lands_once_whatever_the_order_and_replays(cfg: Settings, sink: Sink) -> None:
    campaign = cfg.topic_prefix + "launch"
    decisions, (note,) = walk(5, campaign_id=campaign)  # 30 + 30 + 30 + 10 = 100, then skipped
    last = decisions[-1]
    records = [(t.EVENTS_LOYALTY, d["customer_id"], d) for d in decisions]
    # the exhausting decision and its notification first, the earlier spends after it
    first = [records[-1], (t.NOTIFICATIONS, note["customer_id"], note), *records[:-1]]
    samples.produce(cfg, first)
    wait_for(lambda: committed(cfg) == len(first), what="the sink to commit the decisions")
    url = cfg.database_url
    exhausted_at = datetime.fromtimestamp(orjson.loads(note["data"])["exhausted_at"] / 1000, UTC)
    want = [
        ("POINTS", 100.0, 100.0, 0.0, exhausted_at, datetime.fromtimestamp(last["issued_at"] / 1000, UTC))
    ]
    assert query(url, ROW, campaign) == want

    samples.produce(cfg, records[::-1])  # a replay of every decision, newest first
    wait_for(lambda: committed(cfg) == len(first) + len(records), what="the sink to commit the replay")
    assert query(url, ROW, campaign) == want
    # each decision is also its own events row (a command), counted once per send
    ids = [d["id"] for d in decisions]
    sends = "SELECT sum(sends) FROM events WHERE kind = 'BUDGET_DECISION' AND id = ANY(%s)"
    assert scalar(url, sends, ids) == 2 * len(ids)
