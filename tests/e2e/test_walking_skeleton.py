"""Walking skeleton: the whole stack as a user sees it, over HTTP, Kafka and PostgreSQL.

`loyalty stack up` starts every service as a subprocess against the session's broker and a fresh
database; a PURCHASE posted to ingest must show up as points in the wallets table and as a
CUSTOMER_ACCUMULATION webhook, and a tracking-only PAGE_VIEW must reach the events table
without ever touching a wallet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from deploy.local.paths import ROOT
from deploy.local.postgres import create_database
from processors.delivery.receiver import Receiver
from processors.runtime.testing import wait_for

pytestmark = pytest.mark.e2e

PROGRAM = """\
name: walking-skeleton
event_types:
  - name: PAGE_VIEW
    path: tracking
campaigns:
  - id: purchase-points
    triggers: [PURCHASE]
    condition: properties.amount > 0
    formula: properties.amount * 1
webhooks:
  - id: test-receiver
    url: {url}/webhooks
    events: [CUSTOMER_ACCUMULATION]
  - id: stack-receiver  # the stack's own receiver; `loyalty stack up` expands the variable
    url: ${{RECEIVER_URL}}/webhooks
    events: [CUSTOMER_ACCUMULATION, CUSTOMER_REGISTRATION]
"""


def loyalty(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"loyalty {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, database_url: str, receiver: Receiver) -> Iterator[dict[str, str]]:
    """`loyalty stack up` on the session's broker (own topic prefix) and a fresh database;
    yields its stack.env. Service logs are printed (shown by pytest on failure)."""
    db = create_database(database_url, f"e2e_{uuid.uuid4().hex[:8]}")
    home = ROOT / ".local" / f"test-e2e-{uuid.uuid4().hex[:8]}"
    home.mkdir(parents=True)
    program = home / "program.yaml"
    program.write_text(PROGRAM.format(url=receiver.url()))
    env = os.environ | {
        "LOYALTY_LOCAL_DIR": str(home),
        "LOYALTY_PORTS": "auto",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": db,
        "TOPIC_PREFIX": f"e{uuid.uuid4().hex[:8]}.",
    }
    try:
        loyalty(env, "stack", "up", "--program", str(program))
        lines = (home / "stack.env").read_text().splitlines()
        yield dict(line.split("=", 1) for line in lines if line) | {"LOYALTY_LOCAL_DIR": str(home)}
    finally:
        subprocess.run([sys.executable, "-m", "deploy.cli", "stack", "down"], cwd=ROOT, env=env)
        _print_logs(home)
        shutil.rmtree(home, ignore_errors=True)


def _print_logs(home: Path) -> None:
    """Service logs end up in the test report when it fails (pytest shows captured stdout)."""
    for log in sorted((home / "logs").glob("*.log")):
        print(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))


def query(url: str, sql: str, *params: Any) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def test_purchase_earns_points_and_webhook_page_view_is_tracking_only(
    stack: dict[str, str], receiver: Receiver
) -> None:
    db = stack["DATABASE_URL"]
    buyer, visitor = f"buyer-{uuid.uuid4().hex[:6]}", f"visitor-{uuid.uuid4().hex[:6]}"
    headers = {"X-API-Key": stack["API_KEY"]}
    with httpx.Client(base_url=stack["INGEST_URL"], headers=headers, timeout=10) as client:
        purchase = {"customer_id": buyer, "type": "PURCHASE", "reference": "order-1"}
        resp = client.post("/behavior/events", json=purchase | {"properties": {"amount": 125}})
        assert resp.status_code == 202, resp.text
        view = {"customer_id": visitor, "type": "PAGE_VIEW", "properties": {"url": "/"}}
        resp = client.post("/behavior/events", json=view)
        assert resp.status_code == 202, resp.text
        view_id = resp.json()["data"]["id"]

    wallet = wait_for(
        lambda: query(db, "SELECT points FROM wallets WHERE customer_id = %s", buyer),
        timeout=45,
        what="the buyer's wallet row",
    )
    assert wallet == [(125.0,)]

    def accumulation() -> dict | None:
        return next(
            (
                b
                for b in receiver.bodies
                if b.get("event") == "CUSTOMER_ACCUMULATION" and buyer in json.dumps(b["data"])
            ),
            None,
        )

    webhook = wait_for(accumulation, timeout=45, what="the CUSTOMER_ACCUMULATION webhook")
    assert webhook["data"]

    rows = wait_for(
        lambda: query(db, "SELECT path, type FROM events WHERE id = %s", view_id),
        timeout=45,
        what="the PAGE_VIEW in the events table",
    )
    assert rows == [("tracking", "PAGE_VIEW")]
    assert query(db, "SELECT 1 FROM wallets WHERE customer_id = %s", visitor) == []

