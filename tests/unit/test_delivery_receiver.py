"""The one webhook receiver as the compose stack runs it: `GET /received` lists the latest POSTs
with how they were answered, and compose.yaml's command line is one the receiver accepts."""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from processors.delivery.receiver import Receiver, parse_args
from processors.delivery.verify import signature_header

SECRET = "whsec_ZGVtby1zZWNyZXQtZm9yLWxvY2FsLXRlc3Rpbmc="
COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose" / "compose.yaml"


def _signed(body: bytes, secret: str = SECRET, msg_id: str = "msg-1") -> dict[str, str]:
    ts = int(time.time())
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": signature_header([secret], msg_id, ts, body)}  # fmt: skip


def test_received_lists_each_post_with_its_answer() -> None:
    with Receiver(secrets=[SECRET], recent=10) as receiver, httpx.Client() as client:
        good, bad = b'{"event":"E","data":{"customer_id":"ann"}}', b'{"event":"E","data":{}}'
        assert client.post(receiver.url("/webhooks"), content=good, headers=_signed(good)).status_code == 200
        forged = _signed(bad, secret="whsec_" + "QUFBQUFBQUFBQUFBQUFBQQ==", msg_id="msg-2")
        assert client.post(receiver.url("/webhooks"), content=bad, headers=forged).status_code == 401

        listed = client.get(receiver.url("/received")).json()
        assert listed["count"] == 2
        first, second = listed["requests"]
        assert (first["index"], first["path"], first["body"]) == (0, "/webhooks", good.decode())
        assert (first["status"], first["verified"], first["error"]) == (200, True, None)
        assert first["headers"]["webhook-id"] == "msg-1"
        refusal = (second["status"], second["verified"], second["error"])
        assert refusal == (401, False, "no matching signature")

        assert [r["index"] for r in client.get(receiver.url("/received?after=1")).json()["requests"]] == [1]
        refused = client.get(receiver.url("/received?after=last"))
        assert refused.status_code == 400 and "after" in refused.json()["error"]


def test_received_keeps_only_the_latest_posts() -> None:
    with Receiver(recent=2) as receiver, httpx.Client() as client:
        for n in range(3):
            assert client.post(receiver.url("/w"), content=b'{"n": %d}' % n).status_code == 200
        listed = client.get(receiver.url("/received")).json()
    assert listed["count"] == 3
    assert [(r["index"], r["body"], r["verified"]) for r in listed["requests"]] == [
        (1, '{"n": 1}', False),
        (2, '{"n": 2}', False),
    ]


def _compose_defaults(arg: str) -> str:
    """`${NAME:-default}` as compose expands it when NAME is not set."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", arg)


def test_compose_runs_this_receiver_with_a_command_line_it_accepts() -> None:
    service = yaml.safe_load(COMPOSE.read_text())["services"]["receiver"]
    assert service["entrypoint"][-2:] == ["-m", "processors.delivery.receiver"]
    args = parse_args([_compose_defaults(a) for a in service["command"]])
    assert (args.host, args.port, args.secret) == ("0.0.0.0", 8080, [SECRET])
    assert args.recent > 0, "the compose test and the demo read GET /received"
    assert service["environment"]["HEALTH_PORT"] == str(args.port)  # the image's healthcheck


def test_the_receiver_process_serves_received_and_stops_on_sigterm() -> None:
    cmd = [sys.executable, "-m", "processors.delivery.receiver", f"--secret={SECRET}", "--recent=5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the receiver printed no port"
        port = int(proc.stdout.readline())
        body = b'{"event":"E","data":{}}'
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.post("/webhooks", content=body, headers=_signed(body)).status_code == 200
            (hit,) = client.get("/received").json()["requests"]
        assert hit["verified"] and hit["body"] == body.decode()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@pytest.mark.parametrize("bad", [["--recent", "-1"], ["--port", "x"]])
def test_a_bad_command_line_is_refused(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(bad)
    assert bad[0] in capsys.readouterr().err
