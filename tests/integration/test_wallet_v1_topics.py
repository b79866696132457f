"""Topics still holding v1 results and notifications (the wallet as JSON inside a string), next to
v2 ones (the Wallet record), on real Kafka: the sink writes the same PostgreSQL rows for both and
delivery POSTs the same webhook bodies, so an upgrade needs no topic drained first."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from plumbing.config_table import publish_program
from processors.delivery.loop import DeliveryService, Options
from processors.delivery.receiver import Receiver
from processors.runtime.testing import wait_for
from schemas import topics as t
from schemas.codec import encode
from schemas.program import Delivery, Program, Webhook
from schemas.settings import Settings
from schemas.topics import topic_name
from sinks.sink import Sink
from tests.support.pg import committed, query
from tests.unit.test_wallet_record import PROGRAM, scenario, v1_bytes

pytestmark = pytest.mark.integration
SECRET = "whsec_" + base64.b64encode(b"wallet-v1-secret-0123456789abcd").decode()
TAG = "Q7"  # the scenario's customer and event ids start with it


def renamed(value: dict[str, Any], tag: str) -> dict[str, Any]:
    """The scenario's record for another customer: every id carrying TAG gets `tag` instead."""
    return orjson.loads(orjson.dumps(value).decode().replace(TAG, tag))


def produce(settings: Settings, records: list[tuple[str, str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for topic, key, data in records:
        producer.produce(topic_name(topic, settings), key=key.encode(), value=data)
    assert producer.flush(10) == 0


def test_v1_and_v2_results_are_sunk_to_the_same_rows(cfg: Settings, sink: Sink) -> None:
    results = [v for topic, _, v in scenario() if topic == t.LOYALTY_RESULTS]
    # the sink scores results with the program version they name (leaderboards): publish it
    assert publish_program(cfg, PROGRAM) == results[0]["config_version"]
    old, new = f"{cfg.topic_prefix}old-", f"{cfg.topic_prefix}new-"
    records = []
    for res in results:
        a, b = renamed(res, old), renamed(res, new)
        records += [(t.LOYALTY_RESULTS, a["customer_id"], v1_bytes("Result", a))]
        records += [(t.LOYALTY_RESULTS, b["customer_id"], encode("Result", b))]
    produce(cfg, records)
    wait_for(lambda: committed(cfg) == len(records), timeout=60, what="every result sunk")

    def rows(tag: str) -> dict[str, list]:
        """Each table's rows of one customer, ids and JSON as text with the tag put back."""
        who = tag + "cust"
        sql = {
            "wallets": "SELECT points, lifetime, pending, balance::text, wallet::text, sequence "
            "FROM wallets WHERE customer_id = %s",
            "wallet_lines": "SELECT id, kind, amount, line::text, sequence FROM wallet_lines "
            "WHERE customer_id = %s ORDER BY id",
            "ledger_lines": "SELECT id, kind, amount, line::text FROM ledger_lines "
            "WHERE customer_id = %s ORDER BY id",
            "events": "SELECT id, status, points, result::text FROM events "
            "WHERE customer_id = %s ORDER BY id",
        }
        out = {name: query(cfg.database_url, q, who) for name, q in sql.items()}
        return orjson.loads(orjson.dumps(out, default=str).decode().replace(tag, TAG))

    sunk = rows(old)
    assert sunk == rows(new)
    ((points, lifetime, pending, _, wallet, sequence),) = sunk["wallets"]
    assert (points, lifetime, pending, sequence) == (80.0, 95.0, 0.0, 6)  # 60+10-15 (+55-55), +30-5
    assert json.loads(wallet)["customer_id"] == TAG + "cust"
    assert any("source_line_id" in line for _, _, _, line, _ in sunk["wallet_lines"])
    assert len(sunk["events"]) == len({r["event_id"] for r in results})  # CANCEL: the order's row


def test_v1_and_v2_notifications_give_receivers_the_same_bodies(
    settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    notes = [v for topic, _, v in scenario() if topic == t.NOTIFICATIONS]
    hook = receiver.routes["/hook"]
    hook.secret = [SECRET]
    program = Program(
        webhooks=[Webhook(id="hook", url=receiver.url("/hook"), events=["*"], secret=SECRET)],
        delivery=Delivery(retry_tiers=["200ms"], timeout_s=2),
    )
    service = DeliveryService(settings, lambda: program, Options(state_dir=tmp_path / "state")).start()
    try:
        records = []
        for note in notes:  # one customer: a partition delivers them in order, v1 then v2
            records.append(
                (
                    t.NOTIFICATIONS,
                    note["customer_id"],
                    v1_bytes("Notification", {**note, "id": "v1-" + note["id"]}),
                )
            )
            records.append(
                (
                    t.NOTIFICATIONS,
                    note["customer_id"],
                    encode("Notification", {**note, "id": "v2-" + note["id"]}),
                )
            )
        produce(settings, records)
        wait_for(lambda: len(hook.unique) == len(records), timeout=30, what="every webhook delivered")
    finally:
        service.stop()
    assert hook.bad_signatures == 0
    bodies = {h.get("webhook-id") or h.get("Webhook-Id"): body for _, h, body in hook.received}
    for note in notes:
        assert bodies["v1-" + note["id"]] == bodies["v2-" + note["id"]]
    accumulations = [
        json.loads(bodies["v2-" + n["id"]]) for n in notes if n["event"] == "CUSTOMER_ACCUMULATION"
    ]
    assert accumulations and all(list(b["data"]) == ["customer_id", "lines", "wallet"] for b in accumulations)
