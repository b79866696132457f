"""PATCH /customers/{id}/identify/anonymous at ingest (no Kafka): Masivo's body is accepted
under both base paths and becomes one IDENTIFY command keyed by the anonymous id; a bad
`new_id` is a 422 that names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.app import STOREFRONT_PREFIX
from tests.unit.test_ingest_api import H, Harness

BODY = json.loads(
    (Path(__file__).parents[1] / "contracts" / "masivo" / "identify_anonymous.json").read_text()
)


@pytest.fixture
def h():
    h = Harness()
    with TestClient(h.app) as client:
        h.client = client
        yield h


@pytest.mark.parametrize("base", ["", STOREFRONT_PREFIX])
def test_masivo_body_becomes_one_identify_command_keyed_by_the_anonymous_id(h, base):
    resp = h.client.patch(f"{base}/customers/anon-1/identify/anonymous", json=BODY, headers=H)
    assert resp.status_code == 202, resp.text
    ((topic, key, record),) = h.producer.sent
    assert (topic, key, record["customer_id"]) == ("events.loyalty", "anon-1", "anon-1")
    assert (record["kind"], record["type"]) == ("IDENTIFY", "IDENTIFY")
    payload = json.loads(record["payload"])
    assert payload["new_id"] == "masivo-known"
    assert payload["customer"]["email"] == "john@example.com"
    assert payload["customer"]["dob"] == "1990-11-07T05:31:56+00:00"
    assert payload["customer"]["devices"][0]["device_info"]["platform"] == "ios"
    assert resp.json()["data"]["id"] == record["id"]


def test_a_retried_patch_has_the_same_command_id(h):
    for _ in range(2):
        h.client.patch("/customers/anon-1/identify/anonymous", json={"new_id": "k"}, headers=H)
    first, second = (r["id"] for _, _, r in h.producer.sent)
    assert first == second  # the processor answers the repeat as a duplicate


@pytest.mark.parametrize(
    "body",
    [{}, {"new_id": ""}, {"new_id": None}, {"new_id": 5}, {"new_id": "x" * 257}],
)
def test_a_bad_new_id_is_a_422_naming_it(h, body):
    resp = h.client.patch("/customers/anon-1/identify/anonymous", json=body, headers=H)
    assert resp.status_code == 422, resp.text
    assert "new_id" in [f["path"] for f in resp.json()["error"]["fields"]]
    assert h.producer.sent == []


def test_unknown_fields_and_consent_are_named(h):
    body = {"new_id": "k", "consent": {"purposes": {"email_marketing": True}}}
    resp = h.client.patch("/customers/anon-1/identify/anonymous", json=body, headers=H)
    assert resp.status_code == 422
    assert [f["path"] for f in resp.json()["error"]["fields"]] == ["consent"]


def test_needs_the_ingest_scope(h):
    resp = h.client.patch(
        "/customers/anon-1/identify/anonymous", json={"new_id": "k"}, headers={"X-API-Key": "ak"}
    )
    assert resp.status_code == 403
