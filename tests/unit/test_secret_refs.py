"""`${NAME}` webhook secrets: kept as references by `loyalty config apply`, resolved only by the
delivery service at send time, and a clear DLQ reason when the variable is not set."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from deploy.cli import expand_env
from processors.delivery.disabled import DisabledTable
from processors.delivery.http import HttpxClient
from processors.delivery.sender import Deliverer, UnresolvedSecret, resolve_secrets
from processors.delivery.verify import verify
from schemas.program import Program, Webhook
from schemas.topics import DELIVERY_DLQ
from tests.unit.test_delivery_sender import URL, FakeOutbox, _note

SECRET = "whsec_ZnJvbS10aGUtZW52aXJvbm1lbnQ="


def test_config_apply_keeps_secret_references_and_expands_the_rest() -> None:
    data = {"webhooks": [{"id": "a", "url": "${URL}", "secret": "${HOOK}", "previous_secrets": ["${OLD}"]}]}
    out = expand_env(data, {"URL": "https://x"})  # HOOK and OLD need not be set where apply runs
    assert out["webhooks"][0] == {
        "id": "a",
        "url": "https://x",
        "secret": "${HOOK}",
        "previous_secrets": ["${OLD}"],
    }


def test_resolve_secrets() -> None:
    assert resolve_secrets(("lit", "${A}"), {"A": "x"}) == ("lit", "x")
    with pytest.raises(UnresolvedSecret, match=r"\$\{B\} is not set"):
        resolve_secrets(("${B}",), {})


def _deliver(monkeypatch, env: dict[str, str]) -> tuple[str, FakeOutbox, list[httpx.Request]]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("UNSET_HOOK_SECRET", raising=False)
    ref = "${HOOK_SECRET}" if env else "${UNSET_HOOK_SECRET}"
    program = Program(webhooks=[Webhook(id="a", url=URL, events=["CUSTOMER_ACCUMULATION"], secret=ref)])
    outbox, seen = FakeOutbox(), []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async def go() -> str:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await Deliverer(HttpxClient(client), outbox, lambda: program, DisabledTable()).deliver(
                "webhook:a", _note()
            )

    return asyncio.run(go()), outbox, seen


def test_delivery_signs_with_the_resolved_reference(monkeypatch) -> None:
    outcome, _, seen = _deliver(monkeypatch, {"HOOK_SECRET": SECRET})
    assert outcome == "DELIVERED"
    assert verify(seen[0].content, dict(seen[0].headers), SECRET)["data"] == {"points": 10}


def test_an_unset_reference_dead_letters_with_a_clear_reason(monkeypatch) -> None:
    outcome, outbox, seen = _deliver(monkeypatch, {})
    assert outcome == "DLQ" and seen == []  # nothing sent unsigned
    topic, value = outbox.sent[0]
    assert topic == DELIVERY_DLQ and "${UNSET_HOOK_SECRET} is not set" in value["last_error"]
    assert json.dumps(outbox.attempts).count("UNSET_HOOK_SECRET") == 1
