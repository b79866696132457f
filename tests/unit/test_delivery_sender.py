"""One attempt end to end against a mocked HTTP transport: outcome, retry/DLQ/disable routing."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import httpx
import pytest

from processors.delivery.disabled import DisabledTable
from processors.delivery.http import HttpxClient
from processors.delivery.sender import Deliverer
from processors.delivery.verify import verify
from schemas.program import Delivery, Program, Webhook

URL = "http://127.0.0.1:9/hook"


class FakeOutbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.attempts: list[dict[str, Any]] = []

    async def send(self, topic: str, key: str, value: dict[str, Any]) -> None:
        self.sent.append((topic, value))

    def record(self, attempt: dict[str, Any]) -> None:
        self.attempts.append(attempt)


def _note(attempt: int = 0) -> dict[str, Any]:
    return {
        "id": "wh-1",
        "event": "CUSTOMER_ACCUMULATION",
        "customer_id": "c1",
        "data": json.dumps({"points": 10}),
        "created_at": 1,
        "config_version": 1,
        "endpoint_id": "a",
        "attempt": attempt,
        "not_before": None,
        "last_error": None,
    }


def _run(
    handler, attempt: int = 0, disabled: DisabledTable | None = None
) -> tuple[str, FakeOutbox, DisabledTable]:
    program = Program(
        webhooks=[Webhook(id="a", url=URL, events=["CUSTOMER_ACCUMULATION"], secret="s3cret")],
        delivery=Delivery(retry_tiers=["200ms", "1s"]),
    )
    outbox = FakeOutbox()
    disabled = disabled or DisabledTable()

    async def go() -> str:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await Deliverer(HttpxClient(client), outbox, lambda: program, disabled).deliver(
                "webhook:a", _note(attempt)
            )

    return asyncio.run(go()), outbox, disabled


def test_2xx_is_delivered_with_verifiable_signature() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    outcome, outbox, _ = _run(handler)
    assert outcome == "DELIVERED" and outbox.sent == []
    body = verify(seen[0].content, dict(seen[0].headers), "s3cret")
    assert body == {"event": "CUSTOMER_ACCUMULATION", "data": {"points": 10}}
    assert seen[0].headers["webhook-id"] == "wh-1"
    assert outbox.attempts[0]["outcome"] == "DELIVERED" and outbox.attempts[0]["attempt"] == 1


def test_failure_goes_to_next_tier_keeping_the_id() -> None:
    outcome, outbox, _ = _run(lambda r: httpx.Response(500), attempt=1)
    topic, value = outbox.sent[0]
    assert outcome == "RETRY" and topic == "delivery.retry.1s"
    assert (value["id"], value["attempt"], value["last_error"]) == ("wh-1", 2, "HTTP 500")


def test_429_retry_after_picks_the_tier_covering_it() -> None:
    outcome, outbox, _ = _run(lambda r: httpx.Response(429, headers={"retry-after": "1"}))
    topic, value = outbox.sent[0]
    assert outcome == "RETRY" and topic == "delivery.retry.1s"  # not the 200ms tier
    assert value["not_before"] - outbox.attempts[0]["at"] == pytest.approx(1_000, abs=200)


def test_exhausted_tiers_dead_letter_with_last_error() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    outcome, outbox, _ = _run(boom, attempt=2)
    topic, value = outbox.sent[0]
    assert (outcome, topic, value["attempt"]) == ("DLQ", "delivery.dlq", 3)
    assert "ConnectError" in value["last_error"]


def test_410_disables_the_endpoint_keyed_by_a_hash_without_the_secret() -> None:
    outcome, outbox, disabled = _run(lambda r: httpx.Response(410))
    assert outcome == "DISABLED" and outbox.sent[0][0] == "delivery.dlq"
    (key,) = disabled.rows()
    assert key == hashlib.sha256(f"webhook:a\n{URL}".encode()).hexdigest()
    assert "s3cret" not in json.dumps(disabled.rows())
    calls: list[int] = []
    outcome, _, _ = _run(lambda r: calls.append(1) or httpx.Response(200), disabled=disabled)
    assert outcome == "DISABLED" and calls == []


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_and_dead_letters_at_once(status: int) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(status, headers={"location": "http://169.254.169.254/latest"})

    outcome, outbox, _ = _run(handler)
    topic, value = outbox.sent[0]
    assert (outcome, topic, value["attempt"]) == ("DLQ", "delivery.dlq", 1)  # no retry tier
    assert value["last_error"] == f"redirect {status} to http://169.254.169.254/latest not followed"
    assert calls == [URL]  # the target was not called
    assert outbox.attempts[0]["status_code"] == status
