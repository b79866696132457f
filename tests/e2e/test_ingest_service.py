"""`loyalty ingest` as a real process with two uvicorn workers: answers over HTTP, writes JSON
logs, exposes /healthz and /metrics, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from deploy.local.paths import ROOT, free_port
from plumbing.config_table import publish_program
from schemas.program import EventType, Program
from schemas.topics import EVENTS_LOYALTY
from tests.integration.test_ingest_kafka import read_topic

pytestmark = pytest.mark.e2e


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("ingest never became healthy")


def test_service_serves_events_with_two_workers(settings):
    publish_program(settings, Program(event_types=[EventType(name="APP_OPEN", path="tracking")]))
    port = free_port()
    env = {**os.environ, "TOPIC_PREFIX": settings.topic_prefix, "INGEST_API_KEYS": "e2e:ingest"}
    cmd = [sys.executable, "-m", "deploy.cli", "ingest", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        headers = {"X-API-Key": "e2e"}
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            ids = []
            for i in range(20):
                body = {"customer_id": f"c{i}", "type": "PURCHASE", "reference": f"r{i}"}
                resp = client.post("/behavior/events", json=body)
                assert resp.status_code == 202, resp.text
                ids.append(resp.json()["data"]["id"])
            assert (
                client.post("/behavior/events", json={"customer_id": "x", "type": "APP_OPEN"}).status_code
                == 202
            )
            assert client.post("/behavior/events", json={"customer_id": "x"}).status_code == 422
            assert client.get("/openapi.json").status_code == 200
            assert "ingest_requests_total" in client.get("/metrics").text
        found = read_topic(settings, EVENTS_LOYALTY, len(ids))
        assert sorted(r["id"] for _, r, _ in found) == sorted(ids)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
    assert proc.returncode == 0
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    ready = [entry for entry in lines if entry["msg"] == "ingest ready"]
    assert len(ready) == 2 and all(entry["service"] == "ingest" for entry in ready)
    assert len({entry["instance_id"] for entry in ready}) == 2
