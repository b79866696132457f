"""Builders of realistic topic records (as the other rooms emit them), for tests and the bench."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from confluent_kafka import Producer

from schemas import topics as t
from schemas.codec import encode
from schemas.settings import Settings
from schemas.topics import schema_for, topic_name

NOW = 1_790_000_000_000  # a fixed epoch ms so rows are reproducible


def event(customer: str, n: int, type_: str = "PURCHASE", amount: float = 10.0, **kw: Any) -> dict:
    return {
        "id": kw.pop("id", str(uuid.uuid5(uuid.NAMESPACE_URL, f"{customer}:ref-{n}"))),
        "kind": "EVENT",
        "customer_id": customer,
        "type": type_,
        "path": "loyalty",
        "reference": f"ref-{n}",
        "issued_at": NOW + n,
        "received_at": NOW + n + 1,
        "properties": orjson.dumps({"amount": amount}).decode(),
        **kw,
    }


def wallet(customer: str, points: float, lines: list[dict] | None = None) -> dict:
    """A `Wallet` record (schemas/wallet.py)."""
    return {
        "customer_id": customer,
        "balance": {"POINTS": points},
        "points": points,
        "lifetime": points,
        "pending": 0.0,
        "reserved": {},
        "totals": [{"total": points, "reward_id": "POINTS", "expiration_date": None}] if points else [],
        "lines": lines or [],
        "sequence": None,
    }


def result(ev: dict, points: float, balance: float, status: str = "RESOLVED", **kw: Any) -> dict:
    """A Result as the loyalty processor writes it; `v1=True`: as versions before the Wallet
    record wrote it (the wallet JSON inside `detail`, for the history/result.v1.avsc schema)."""
    v1 = kw.pop("v1", False)
    line = {
        "id": f"{ev['id']}:acc",
        "amount": points,
        "reward_id": "POINTS",
        "campaign_id": "base",
        "rule": "base",
        "event_id": ev["id"],
        "issued_at": ev["issued_at"],
        "expiration_date": None,
        "kind": "ACCUMULATION",
    }
    detail = {
        "rules_applied": ["base"],
        "accumulations": [line] if points else [],
        "redemptions": [],
        "tier": None,
        "event": ev,
        "duplicate": kw.pop("duplicate", False),
    }
    out = {
        "event_id": ev["id"],
        "customer_id": ev["customer_id"],
        "type": ev["type"],
        "kind": ev.get("kind", "EVENT"),
        "status": status,
        "points": points,
        "processed_at": kw.pop("processed_at", ev["received_at"] + 5),
        "detail": orjson.dumps(detail).decode(),
        "wallet": wallet(ev["customer_id"], balance, [line]),
        **kw,
    }
    if v1:
        out["detail"] = orjson.dumps({**detail, "wallet": out.pop("wallet")}).decode()
    return out


def stream(customers: int, per_customer: int) -> list[tuple[str, str, dict]]:
    """(topic, key, value): each customer's events and results; points 1..n, so sums are known."""
    out: list[tuple[str, str, dict]] = []
    for c in range(customers):
        cid = f"c{c}"
        balance = 0.0
        for n in range(per_customer):
            ev = event(cid, n, amount=float(n + 1))
            balance += n + 1
            out.append((t.EVENTS_LOYALTY, cid, ev))
            out.append((t.LOYALTY_RESULTS, cid, result(ev, float(n + 1), balance)))
    return out


def producer(settings: Settings) -> Producer:
    return Producer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 20,
         "enable.idempotence": True, "partitioner": "murmur2_random"}
    )  # fmt: skip


def produce(settings: Settings, records: list[tuple[str, str, dict]], using: Producer | None = None) -> None:
    """Produce (logical topic, key, value) records, Avro-encoded with each topic's schema."""
    out = using or producer(settings)
    for i, (topic, key, value) in enumerate(records):
        data = encode(schema_for(topic), value)
        out.produce(topic_name(topic, settings), key=key.encode(), value=data)
        if i % 10000 == 0:
            out.poll(0)
    assert out.flush(30) == 0
