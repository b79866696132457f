"""Direct points over HTTP with the real loyalty processor: every adjustment sent 3 times (a
client retrying), the processor killed with SIGKILL in the middle and restarted on an empty
state dir, then every adjustment sent once more: each is applied exactly once and every wallet
ends at the exact sum of its adjustments."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.app import create_app
from ingest.config import IngestConfig
from plumbing.config_table import publish_program
from schemas.ids import name_uuid
from schemas.settings import Settings
from tests.integration.test_loyalty_kafka import PROGRAM, Results
from tests.integration.test_loyalty_kill9 import start

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
H = {"X-API-Key": "k"}
CUSTOMERS = [f"a{i}" for i in range(8)]
ROUNDS = 20  # 160 adjustments, 480 requests before the kill-and-restart, 160 after


def amount(n: int) -> int:
    """Odd rounds credit 10 n, even rounds debit 5: the balance never runs short."""
    return 10 * n if n % 2 else -5


def post_all(client: TestClient, copies: int, per_second: float, sent: list[str]) -> None:
    began = time.monotonic()
    for n in range(1, ROUNDS + 1):
        for c in CUSTOMERS:
            body = {"amount": amount(n), "reason": f"round {n}", "reference": f"adj-{n}"}
            for _ in range(copies):
                resp = client.post(f"/customers/{c}/points", json=body, headers=H)
                assert resp.status_code == 202, resp.text
                sent.append(resp.json()["data"]["id"])
                time.sleep(max(0.0, began + len(sent) / per_second - time.monotonic()))


def test_adjustments_applied_once_under_retries_and_kill_9(settings: Settings, tmp_path: Path) -> None:
    version = publish_program(settings, PROGRAM)
    results = Results(settings)
    log = tmp_path / "processor.log"
    proc = start(settings, tmp_path / "state-1", log)
    app = create_app(settings, IngestConfig(api_keys={"k": frozenset({"adjust"})}))
    sent: list[str] = []
    try:
        with TestClient(app) as client:
            app.state.ingest.programs.wait_for_version(version, timeout=60)
            poster = threading.Thread(target=post_all, args=(client, 3, 150, sent))
            poster.start()
            results.wait_for(lambda rs: len(rs) >= 60, timeout=90)
            proc.send_signal(signal.SIGKILL)  # under load: most likely inside a transaction
            proc.wait(10)
            assert poster.is_alive(), "the kill must land while adjustments are still arriving"
            proc = start(settings, tmp_path / "state-2", log)  # empty disk: state from changelogs
            poster.join(120)
            post_all(client, 1, 500, sent)  # retried after the restart: deduplicated from state
        ids = {name_uuid(f"{c}:adj-{n}") for c in CUSTOMERS for n in range(1, ROUNDS + 1)}
        assert set(sent) == ids
        done = results.wait_for(lambda rs: len(rs) >= len(sent) and rs, timeout=180)
        applied = [r for r in done if not r["detail"]["duplicate"]]
        assert sorted(r["event_id"] for r in applied) == sorted(ids), "each applied exactly once"
        assert {r["status"] for r in applied} == {"RESOLVED"}
        expected = {c: float(sum(amount(n) for n in range(1, ROUNDS + 1))) for c in CUSTOMERS}
        last = {}
        for r in applied:
            wallet = r["wallet"]
            if wallet["sequence"] > last.get(r["customer_id"], {}).get("sequence", -1):
                last[r["customer_id"]] = wallet
        assert {c: w["points"] for c, w in last.items()} == expected
        lines = [ln for r in applied for ln in r["detail"]["accumulations"] + r["detail"]["redemptions"]]
        assert {ln["kind"] for ln in lines} == {"ADJUSTMENT"} and all(ln["reason"] for ln in lines)
    finally:
        proc.kill()
        proc.wait(10)
        results.consumer.close()
