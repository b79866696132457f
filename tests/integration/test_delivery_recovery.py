"""At-least-once across a SIGKILL: offsets are committed only after delivery, so a killed
delivery process loses nothing; the restarted one re-sends with the same webhook-id."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from plumbing.config_table import publish_program
from processors.delivery.loop import DeliveryService, Options
from processors.delivery.receiver import Receiver
from processors.delivery.testing import notification, produce
from processors.runtime.testing import wait_for
from schemas.program import Delivery, Program, Webhook
from schemas.topics import NOTIFICATIONS

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _id(headers: dict[str, str]) -> str:
    return headers.get("webhook-id") or headers.get("Webhook-Id", "")


def _count(route, webhook_id: str) -> int:
    return sum(_id(h) == webhook_id for _, h, _ in list(route.received))


def test_sigkill_mid_delivery_loses_nothing(settings, tmp_path):
    receiver = Receiver()
    route = receiver.routes["/hook"]
    route.delay_s = 1.0  # deliveries are in flight when the process dies
    program = Program(
        webhooks=[Webhook(id="hook", url=receiver.url("/hook"), events=["E"])],
        delivery=Delivery(retry_tiers=["200ms"]),
    )
    publish_program(settings, program)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "processors.delivery.service", "--metrics-port", str(port)]
        + ["--state-dir", str(tmp_path), "--instance-id", "delivery-0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _healthy(port), timeout=20, what="/healthz")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "delivery_in_flight_messages" in metrics
        notes = [notification("E", {"n": i}, customer=f"c{i}") for i in range(4)]
        produce(settings, NOTIFICATIONS, notes)
        wait_for(lambda: route.calls >= 1, timeout=20, what="first delivery in flight")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    in_flight_at_kill = {_id(h) for _, h, _ in route.received}

    route.delay_s = 0
    # static membership: the restarted instance takes the killed one's partitions at once
    opts = Options(state_dir=tmp_path, instance_id="delivery-0")
    service = DeliveryService(settings, lambda: program, opts).start()
    try:
        # what was in flight at the kill was never acknowledged, so it is sent again
        wait_for(lambda: all(_count(route, i) >= 2 for i in in_flight_at_kill), timeout=20, what="re-sends")
        wait_for(lambda: len(route.unique) == 4, timeout=20, what="all delivered after restart")
        assert set(route.unique) == {n["id"] for n in notes}
    finally:
        service.stop()
        receiver.close()


def test_sigterm_finishes_in_flight_work_and_exits(settings, tmp_path):
    receiver = Receiver()
    route = receiver.routes["/hook"]
    route.delay_s = 0.5
    publish_program(settings, Program(webhooks=[Webhook(id="hook", url=receiver.url("/hook"), events=["E"])]))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "processors.delivery.service", "--metrics-port", str(port)]
        + ["--state-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _healthy(port), timeout=20, what="/healthz")
        note = notification("E", {})
        produce(settings, NOTIFICATIONS, [note])
        wait_for(lambda: route.calls == 1, timeout=20, what="delivery in flight")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        assert code == 0, proc.stderr.read()[-3000:]
        assert route.calls == 1 and note["id"] in route.unique  # finished, not abandoned
        logs = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
        assert {"delivery service started", "delivery service stopped"} <= {x["msg"] for x in logs}
    finally:
        proc.kill()
        receiver.close()
