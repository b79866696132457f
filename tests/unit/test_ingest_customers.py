"""The customer history endpoints without PostgreSQL (paging and filters are SQL, tested in
tests/integration/test_ingest_history.py), and schemathesis over every /customers operation
with a key that holds every scope: no 5xx, the server agrees with its spec."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks

from ingest.customer_history import decode_cursor, encode_cursor
from tests.unit import test_ingest_api as api

KEYS = {"all": frozenset({"ingest", "admin", "adjust"}), "adj": frozenset({"adjust"})}
H = {"X-API-Key": "all"}


def harness() -> api.Harness:
    with mock.patch.object(api, "KEYS", KEYS):
        h = api.Harness()
    h.lookup.customers["c1"] = {
        "customer": {"status": "ACTIVE", "tier_id": None, "metrics": {}},
        "wallet": None,
    }
    api.play_processor(h)
    return h


@pytest.fixture
def h():
    h = harness()
    with TestClient(h.app) as client:
        h.client = client
        yield h


def test_the_customer_object_and_404(h):
    resp = h.client.get("/customers/c1", headers=H)
    assert resp.status_code == 200
    assert resp.json()["data"] == {"customer_id": "c1", **h.lookup.customers["c1"]}
    assert h.client.get("/customers/c2", headers=H).status_code == 404
    assert h.client.get("/customers/c1", headers={"X-API-Key": "adj"}).status_code == 403


def test_filters_and_cursor_reach_the_lookup(h):
    h.lookup.pages["events"] = [{"id": "e1"}]
    cursor = encode_cursor(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "e9")
    resp = h.client.get(
        "/customers/c1/events",
        params={"type": ["PURCHASE", "REVIEW"], "status": "RESOLVED", "since": "2026-01-01T00:00:00",
                "until": "2026-02-01T00:00:00Z", "limit": 2, "cursor": cursor},
        headers=H,
    )  # fmt: skip
    assert resp.status_code == 200
    assert resp.json() == {"data": [{"id": "e1"}], "limit": 2, "next_cursor": "next"}
    ((kind, customer, page),) = h.lookup.asked
    assert (kind, customer, page.types, page.statuses, page.limit) == ("events", "c1", ["PURCHASE", "REVIEW"],
                                                                         ["RESOLVED"], 2)  # fmt: skip
    assert page.since == datetime(2026, 1, 1, tzinfo=UTC) and page.until == datetime(2026, 2, 1, tzinfo=UTC)
    assert page.after == (datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "e9")


def test_ledger_kinds_tiers_defaults_and_an_outage(h):
    assert h.client.get("/customers/c1/ledger?kind=ADJUSTMENT", headers=H).json()["next_cursor"] is None
    assert h.client.get("/customers/c1/tiers", headers=H).json() == {
        "data": [],
        "limit": 50,
        "next_cursor": None,
    }
    assert [(k, p.types) for k, _, p in h.lookup.asked] == [("ledger", ["ADJUSTMENT"]), ("tiers", [])]
    h.lookup.down = True
    for url in ("/customers/c1", "/customers/c1/events", "/customers/c1/ledger", "/customers/c1/tiers"):
        resp = h.client.get(url, headers=H)
        assert resp.status_code == 503 and "Retry-After" in resp.headers


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "cursor=bm9wZQ", "cursor=a%2Bb", "type=%00",
                                   "since=yesterday"])  # fmt: skip
def test_bad_queries_are_422(h, query):
    assert h.client.get(f"/customers/c1/events?{query}", headers=H).status_code == 422


def test_a_cursor_round_trips_exactly():
    at = datetime(2026, 12, 1, 10, 0, 0, 1, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, "id/with:odd chars")) == (at, "id/with:odd chars")


SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", harness().app).include(path_regex="^/customers")
# Valid per the spec is not enough for these: the reward of points must exist in the program,
# and a history cursor must be one the service issued (opaque: base64url text of any content
# matches the spec). Every other check runs on them.
STATE_DEPENDENT = {
    "POST /customers/{customer_id}/points",
    "GET /customers/{customer_id}/events",
    "GET /customers/{customer_id}/ledger",
    "GET /customers/{customer_id}/tiers",
}


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_customers_agree_with_the_spec(case):
    excluded = [checks.ignored_auth]
    if case.operation.label in STATE_DEPENDENT:
        excluded.append(checks.positive_data_acceptance)
    case.call_and_validate(headers=H, excluded_checks=excluded)


def test_badges_held_by_default_revoked_on_request_and_an_outage(h):
    held = {
        "badge_id": "critic",
        "badge_name": "Critic",
        "count": 2,
        "awarded_at": "2026-01-01T00:00:00+00:00",
    }
    gone = {"badge_id": "vip", "badge_name": "VIP", "count": 0, "revoked_at": "2026-01-02T00:00:00+00:00"}
    h.lookup.badge_rows["c1"] = [held, gone]
    assert h.client.get("/customers/c1/badges", headers=H).json() == {"data": [held]}
    both = h.client.get("/customers/c1/badges?revoked=true", headers=H).json()["data"]
    assert [b["badge_id"] for b in both] == ["critic", "vip"]
    assert h.client.get("/customers/c2/badges", headers=H).json() == {"data": []}
    assert h.client.get("/customers/c1/badges?revoked=maybe", headers=H).status_code == 422
    h.lookup.down = True
    resp = h.client.get("/customers/c1/badges", headers=H)
    assert resp.status_code == 503 and "Retry-After" in resp.headers
