"""POST /behavior/events without a query string is answered ahead of the framework
(ingest/fastpath.py); with one (?wait=false) it goes through FastAPI. A client must not be able
to tell them apart: same status, body and headers for every outcome, and the same metrics."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from ingest.app import create_app
from ingest.config import IngestConfig
from ingest.programs import StaticPrograms
from schemas.settings import Settings
from tests.support.ingest_fakes import PROGRAM, FakeLookup, FakeProducer

KEYS = {"ik": frozenset({"ingest"}), "ak": frozenset({"admin"})}
GOOD = {"customer_id": "c1", "type": "PURCHASE", "reference": "o-1", "properties": {"amount": 10}}


def make_app(producer: FakeProducer, **config):
    programs = StaticPrograms(PROGRAM)
    return create_app(
        Settings(topic_prefix="test."),
        IngestConfig(api_keys=KEYS, **config),
        programs=programs,
        producer=producer,
        lookup=FakeLookup(),
        publisher=programs.publish,
        history=programs,
        audit=programs,
        instance_id="ingest-test",
    )


@pytest.fixture
def client():
    producer = FakeProducer()
    with TestClient(make_app(producer, max_body_bytes=4000)) as c:
        c.producer = producer
        yield c


def answer(resp):
    """What a client sees, less what differs between two sends (offset, tokens left)."""
    body = resp.json()
    if "data" in body:
        body["data"]["queue"].pop("offset")
    headers = {k: v for k, v in resp.headers.items() if k not in ("content-length", "x-ratelimit-remaining")}
    return resp.status_code, body, headers


CASES = {
    "accepted": (json.dumps(GOOD).encode(), {"X-API-Key": "ik"}),
    "storefront path": (json.dumps(GOOD).encode(), {"X-API-Key": "ik"}),
    "bearer": (json.dumps(GOOD).encode(), {"Authorization": "Bearer ik"}),
    "malformed json": (b'{"customer_id": ', {"X-API-Key": "ik"}),
    "unknown field": (json.dumps({**GOOD, "amount": 1}).encode(), {"X-API-Key": "ik"}),
    "unknown type": (json.dumps({**GOOD, "type": "NOPE"}).encode(), {"X-API-Key": "ik"}),
    "bad property": (json.dumps({**GOOD, "properties": {"amount": -1}}).encode(), {"X-API-Key": "ik"}),
    "control character": (b'{"customer_id": "c\\u0000", "type": "PURCHASE"}', {"X-API-Key": "ik"}),
    "no key": (json.dumps(GOOD).encode(), {}),
    "unknown key": (json.dumps(GOOD).encode(), {"X-API-Key": "nope"}),
    "bad bearer": (json.dumps(GOOD).encode(), {"Authorization": "Basic ik"}),
    "wrong scope": (json.dumps(GOOD).encode(), {"X-API-Key": "ak"}),
    "too large": (json.dumps({**GOOD, "metadata": {"x": "y" * 5000}}).encode(), {"X-API-Key": "ik"}),
}


@pytest.mark.parametrize("case", CASES)
def test_fast_path_answers_as_the_framework_does(client, case):
    raw, headers = CASES[case]
    path = "/api/storefront/v1/behavior/events" if case == "storefront path" else "/behavior/events"
    headers = {**headers, "Content-Type": "application/json"}
    fast = client.post(path, content=raw, headers=headers)
    framework = client.post(f"{path}?wait=false", content=raw, headers=headers)
    assert answer(fast) == answer(framework)
    assert fast.status_code in (202, 400, 401, 403, 413, 422)
    if fast.status_code == 202:
        assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(fast.headers)


def test_a_streamed_body_over_the_limit_is_413_after_auth(client):
    """Without Content-Length the limit is counted as the body arrives, once the key passed."""
    raw = json.dumps({**GOOD, "metadata": {"x": "y" * 5000}}).encode()
    answers = []
    for path in ("/behavior/events", "/behavior/events?wait=false"):
        chunks = iter([raw[:3000], raw[3000:]])
        answers.append(client.post(path, content=chunks, headers={"X-API-Key": "ik"}))
    assert answers[0].status_code == 413 and answer(answers[0]) == answer(answers[1])
    assert "x-ratelimit-limit" in answers[0].headers
    assert client.post("/behavior/events", content=iter([raw]), headers={}).status_code == 401
    assert client.producer.sent == []


def test_unavailable_and_rate_limited_answer_as_the_framework_does():
    producer = FakeProducer()
    producer.down = True
    with TestClient(make_app(producer)) as c:
        fast = c.post("/behavior/events", json=GOOD, headers={"X-API-Key": "ik"})
        framework = c.post("/behavior/events?wait=false", json=GOOD, headers={"X-API-Key": "ik"})
    assert fast.status_code == 503 and answer(fast) == answer(framework)
    with TestClient(make_app(FakeProducer(), rate_limit_per_s=0.001, rate_limit_burst=1)) as c:
        c.post("/behavior/events", json=GOOD, headers={"X-API-Key": "ik"})
        fast = c.post("/behavior/events", json=GOOD, headers={"X-API-Key": "ik"})
        framework = c.post("/behavior/events?wait=false", json=GOOD, headers={"X-API-Key": "ik"})
    assert fast.status_code == 429 and answer(fast) == answer(framework)


def test_an_unexpected_error_is_the_standard_500():
    producer = FakeProducer()

    async def broken(*args, **kwargs):
        raise RuntimeError("boom")

    producer.send = broken
    with TestClient(make_app(producer), raise_server_exceptions=False) as c:
        resp = c.post("/behavior/events", json=GOOD, headers={"X-API-Key": "ik"})
    assert resp.status_code == 500
    assert resp.json()["error"]["code"] == "internal" and "boom" not in resp.text


def test_requests_are_counted_under_their_route(client):
    client.post("/behavior/events", json=GOOD, headers={"X-API-Key": "ik"})
    client.post("/api/storefront/v1/behavior/events", json=GOOD, headers={"X-API-Key": "nope"})
    metrics = client.get("/metrics").text
    assert 'ingest_requests_total{route="/behavior/events",status="202"}' in metrics
    assert 'ingest_requests_total{route="/api/storefront/v1/behavior/events",status="401"}' in metrics
    assert 'ingest_request_seconds_count{route="/behavior/events"}' in metrics
    assert client.producer.sent[0][2]["reference"] == "o-1"
