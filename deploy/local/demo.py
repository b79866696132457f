"""`loyalty demo`: send a small load to the running stack over HTTP and show what happened.

Registers a customer, sends a few PURCHASEs and tracking PAGE_VIEWs to ingest (INGEST_URL,
API_KEY from the environment or .local/stack.env), waits until the sink has written them, then
prints: events accepted, points per customer, webhooks the local receiver got, rows per table.
References are fixed, so running the demo again is idempotent (no new points).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from deploy.local.paths import local_dir

CUSTOMERS = ("demo-alice", "demo-bob")
PURCHASES = (("demo-alice", "order-1", 125.0), ("demo-alice", "order-2", 40.0))
PURCHASES += (("demo-bob", "order-1", 310.0),)


def stack_env(path: Path | None = None) -> dict[str, str]:
    """`.local/stack.env` overlaid with the process environment."""
    path = path or local_dir() / "stack.env"
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
    keys = ("INGEST_URL", "API_KEY", "DATABASE_URL")
    return values | {k: os.environ[k] for k in keys if os.environ.get(k)}


def demo_requests() -> list[tuple[str, dict[str, Any]]]:
    """(path, body) of every demo request, in order."""
    reqs: list[tuple[str, dict[str, Any]]] = [
        (
            "/customers",
            {"customer_id": "demo-alice", "reference": "signup", "customer": {"name": "Alice"}},
        )
    ]
    for customer, ref, amount in PURCHASES:
        body = {"customer_id": customer, "type": "PURCHASE", "reference": ref}
        reqs.append(("/behavior/events", body | {"properties": {"amount": amount}}))
    for i, customer in enumerate(CUSTOMERS * 2):
        body = {"customer_id": customer, "type": "PAGE_VIEW", "reference": f"view-{i}"}
        reqs.append(("/behavior/events", body | {"properties": {"url": f"/products/{i}"}}))
    return reqs


def send(client: httpx.Client) -> tuple[list[str], list[str]]:
    """POST every demo request; returns (accepted event ids, rejection messages)."""
    accepted, rejected = [], []
    for path, body in demo_requests():
        resp = client.post(path, json=body)
        if resp.status_code in (200, 202):
            accepted.append(resp.json()["data"]["id"] if "data" in resp.json() else "")
        else:
            rejected.append(f"{body.get('type', 'REGISTRATION')} -> {resp.status_code} {resp.text}")
    return accepted, rejected


def wait_for_sink(database_url: str, ids: list[str], timeout: float = 30.0) -> int:
    """Poll the events table until every accepted id is there (or the deadline)."""
    import psycopg

    deadline = time.monotonic() + timeout
    found = 0
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(database_url) as conn:
                row = conn.execute("SELECT count(*) FROM events WHERE id = ANY(%s)", [ids]).fetchone()
                found = row[0] if row else 0
        except psycopg.Error:
            found = 0
        if found >= len(ids):
            break
        time.sleep(0.5)
    return found


def wait_for_wallet(client: httpx.Client, customer: str, timeout: float = 15.0) -> dict:
    """GET the wallet until the sink has written it (it follows loyalty.results)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get(f"/customers/{customer}/wallet")
        if resp.status_code == 200 or time.monotonic() > deadline:
            return resp.json().get("data", {}) if resp.status_code == 200 else {}
        time.sleep(0.5)


def table_counts(database_url: str) -> dict[str, int]:
    import psycopg
    from psycopg import sql

    with psycopg.connect(database_url) as conn:
        names = [
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        ]
        query = "SELECT count(*) FROM {}"
        return {n: conn.execute(sql.SQL(query).format(sql.Identifier(n))).fetchone()[0] for n in names}


def wait_for_webhooks(path: Path, timeout: float = 15.0) -> Counter[str]:
    """Poll the receiver's file until a CUSTOMER_ACCUMULATION arrived (or the deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not webhooks(path)["CUSTOMER_ACCUMULATION"]:
        time.sleep(0.5)
    return webhooks(path)


def webhooks(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            body = json.loads(line).get("body")
            counts[body.get("event", "?") if isinstance(body, dict) else "?"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    env = stack_env()
    if "INGEST_URL" not in env:
        print("demo: no INGEST_URL (run `make up` first)", file=sys.stderr)
        return 1
    headers = {"X-API-Key": env.get("API_KEY", "dev-key")}
    with httpx.Client(base_url=env["INGEST_URL"], headers=headers, timeout=10) as client:
        accepted, rejected = send(client)
        print(f"events accepted: {len(accepted)}, rejected: {len(rejected)}")
        for line in rejected:
            print(f"  rejected {line}")
        if env.get("DATABASE_URL"):
            found = wait_for_sink(env["DATABASE_URL"], [i for i in accepted if i])
            print(f"events in PostgreSQL: {found} of {len(accepted)}")
        for customer in CUSTOMERS:
            data = wait_for_wallet(client, customer)
            print(f"points {customer}: {data.get('points', 'no wallet yet')}")
    hooks = wait_for_webhooks(local_dir() / "receiver.jsonl")
    print(f"webhooks delivered: {sum(hooks.values())} {dict(hooks)}")
    if env.get("DATABASE_URL"):
        for table, count in table_counts(env["DATABASE_URL"]).items():
            print(f"  table {table:<28} {count} rows")
    return 0 if accepted and not rejected else 1


if __name__ == "__main__":
    raise SystemExit(main())
