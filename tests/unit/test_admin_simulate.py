"""Dry runs of program writes (?dry_run=true) and POST /admin/simulate, through HTTP: what a
write would change without publishing it, and what the real loyalty engine would do under a
proposed program without touching Kafka or PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.unit.test_admin_api import HOOK, ITEMS, SECRET, A, match, version_of
from tests.unit.test_ingest_api import Harness, error_of

SPEND = {"id": "spend", "condition": "properties.amount > 0", "formula": "properties.amount"}
BIG = {"id": "big", "condition": "properties.amount >= 100", "formula": "50"}
GOLD = {
    "id": "gold",
    "name": "Gold",
    "level": 1,
    "entry": "profile.lifetime_points >= 100",
    "multiplier": 2.0,
}
BRONZE = {"id": "bronze", "name": "Bronze", "level": 0}


@pytest.fixture
def h():
    harness = Harness()
    with TestClient(harness.app) as client:
        harness.client = client
        yield harness


def published(h) -> tuple[int, int]:
    """The program version and how many history/audit records exist: a dry run moves neither."""
    return version_of(h), len(h.programs.records)


def dry(version: int) -> dict[str, str]:
    return match(version)


# -- ?dry_run=true on writes ----------------------------------------------------------------------


def test_dry_run_create_shows_the_change_and_publishes_nothing(h):
    before = published(h)
    resp = h.client.post("/admin/campaigns?dry_run=true", json=SPEND, headers=dry(3))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["dry_run"] is True and body["version"] == 4 and body["version_before"] == 3
    assert body["data"]["id"] == "spend" and body["data"]["enabled"] is True  # defaults filled
    assert body["summary"] == "campaigns[spend] added"
    assert [c["path"] for c in body["changes"]] == ["campaigns[spend]"]
    assert resp.headers["ETag"] == '"3"' and "Location" not in resp.headers
    assert published(h) == before
    assert h.client.get("/admin/campaigns/spend", headers=A).status_code == 404
    # the same write for real becomes exactly the version the dry run announced
    real = h.client.post("/admin/campaigns", json=SPEND, headers=match(3))
    assert real.status_code == 201 and real.json()["version"] == body["version"]


def test_dry_run_of_every_write_kind(h):
    h.client.post("/admin/campaigns", json=SPEND, headers=match(3))
    before = published(h)
    patch = {"Content-Type": "application/merge-patch+json"}
    cases = [
        h.client.put("/admin/campaigns/spend?dry_run=true", json={**SPEND, "formula": "2"}, headers=dry(4)),
        h.client.patch(
            "/admin/campaigns/spend?dry_run=true", json={"formula": "2"}, headers={**dry(4), **patch}
        ),
        h.client.patch(
            "/admin/program?dry_run=true",
            json={"campaigns": [{**SPEND, "formula": "2"}]},
            headers={**dry(4), **patch},
        ),  # fmt: skip
    ]
    for resp in cases:
        assert resp.status_code == 200, resp.text
        changes = resp.json()["changes"]
        assert changes == [{"path": "campaigns[spend].formula", "before": "properties.amount", "after": "2"}]
    full = h.client.get("/admin/program", headers=A).json()["data"]
    put = h.client.put("/admin/program?dry_run=true", json={**full, "rounding": "ceil"}, headers=dry(4))
    assert put.status_code == 200 and put.json()["changes"][0]["path"] == "rounding"
    assert put.json()["data"]["version"] == 5
    deleted = h.client.delete("/admin/campaigns/spend?dry_run=true", headers=dry(4))
    assert deleted.status_code == 200 and deleted.json()["summary"] == "campaigns[spend] removed"
    rollback = h.client.post("/admin/program/rollback?dry_run=true", json={"version": 4}, headers=dry(4))
    assert rollback.status_code == 200 and rollback.json()["changes"] == []  # 4 is current: no change
    assert published(h) == before
    assert h.programs.current().campaigns[0].formula == "properties.amount"


def test_dry_run_answers_every_error_the_write_would(h):
    before = published(h)
    assert h.client.post("/admin/campaigns?dry_run=true", json=SPEND, headers=A).status_code == 428
    stale = h.client.post("/admin/campaigns?dry_run=true", json=SPEND, headers=dry(2))
    assert stale.status_code == 412 and stale.headers["ETag"] == '"3"'
    bad = h.client.post("/admin/campaigns?dry_run=true", json={**SPEND, "budget": "10"}, headers=dry(3))
    assert bad.status_code == 422 and error_of(bad)["fields"][0]["path"] == "campaigns.0.budget"
    rule = h.client.post("/admin/campaigns?dry_run=true", json={**SPEND, "formula": "x *"}, headers=dry(3))
    assert rule.status_code == 422 and "campaign spend formula" in error_of(rule)["fields"][0]["reason"]
    flag = h.client.post("/admin/campaigns?dry_run=maybe", json=SPEND, headers=dry(3))
    assert flag.status_code == 422 and error_of(flag)["fields"][0]["path"] == "dry_run"
    assert published(h) == before


def test_dry_run_never_shows_a_secret(h):
    h.client.post("/admin/webhooks", json=HOOK, headers=match(3))
    resp = h.client.patch("/admin/webhooks/h1?dry_run=true", json={"secret": "whsec_bmV3LXNlY3JldA=="},
                          headers=dry(4))  # fmt: skip
    assert resp.status_code == 200
    assert SECRET not in resp.text and "whsec_bmV3LXNlY3JldA==" not in resp.text
    assert resp.json()["changes"] == [
        {"path": "webhooks[h1].secret", "before": "********", "after": "********"}
    ]


# -- POST /admin/simulate --------------------------------------------------------------------------


def purchase(amount: float, at: str, customer: str = "c1", **over) -> dict:
    return {
        "customer_id": customer,
        "type": "PURCHASE",
        "properties": {"amount": amount},
        "issued_at": at,
        **over,
    }


def simulate(h, body: dict):
    return h.client.post("/admin/simulate", json=body, headers=A)


def test_simulate_the_current_program_changes_nothing(h):
    h.client.post("/admin/campaigns", json=SPEND, headers=match(3))
    before = published(h)
    body = {"events": [purchase(30, "2026-01-01T10:00:00Z"), {"customer_id": "c1", "type": "PAGE_VIEW"}]}
    resp = simulate(h, body)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["program"] == {"source": "current", "version": 4}
    first = data["steps"][0]
    assert first["trigger"] == "event" and first["index"] == 0 and first["at"].startswith("2026-01-01T10:00")
    result = first["results"][0]
    assert result["status"] == "RESOLVED" and result["points"] == 30
    assert [r["campaign_id"] for r in result["rules_applied"]] == ["spend"]
    assert [n["event"] for n in first["notifications"]] == ["CUSTOMER_ACCUMULATION"]
    assert data["steps"][1]["tracking_only"] is True  # PAGE_VIEW never reaches the engine
    assert data["customers"]["c1"]["points"] == 30 and data["totals"]["by_campaign"] == {"spend": 30}
    assert published(h) == before and h.producer.sent == [] and h.lookup.events == {}


def test_simulate_a_proposed_program_from_a_starting_state(h):
    current = h.client.get("/admin/program", headers=A).json()["data"]
    proposal = {**current, "campaigns": [SPEND, BIG], "tiers": {"levels": [BRONZE, GOLD]}}
    body = {
        "program": proposal,
        "customers": [{"customer_id": "c1", "tier": "bronze", "balances": {"POINTS": 80}}],
        "events": [purchase(30, "2026-01-01T10:00:00Z"), purchase(10, "2026-01-02T10:00:00Z")],
    }
    resp = simulate(h, body)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    first, second = (s["results"][0] for s in data["steps"])
    # 80 + 30 crosses gold's 100 lifetime points: the upgrade comes with the first purchase
    assert first["points"] == 30 and first["tier"]["id"] == "gold"
    assert first["rules_skipped"] == [{"campaign_id": "big", "reason": "condition not met", "failed": False}]
    upgrade = [n for n in data["steps"][0]["notifications"] if n["event"] == "TIER_UPGRADE"]
    assert upgrade[0]["data"]["from_tier_id"] == "bronze" and upgrade[0]["data"]["to_tier_id"] == "gold"
    assert second["points"] == 20  # gold's multiplier 2
    assert data["customers"]["c1"]["points"] == 80 + 30 + 20
    assert data["customers"]["c1"]["tier"]["id"] == "gold"
    assert data["totals"]["tier_changes"][0]["to_tier_id"] == "gold"
    assert data["program"] == {"source": "proposed", "version": None}  # a proposal has no version
    assert version_of(h) == 3 and h.programs.current().campaigns == []  # nothing published


def test_simulate_a_version_from_the_history(h):
    h.client.post("/admin/campaigns", json=SPEND, headers=match(3))
    h.client.patch("/admin/campaigns/spend", json={"formula": "properties.amount * 3"}, headers=match(4))
    at = "2026-01-01T10:00:00Z"
    old = simulate(h, {"version": 4, "events": [purchase(10, at)]}).json()["data"]
    now = simulate(h, {"events": [purchase(10, at)]}).json()["data"]
    assert old["program"] == {"source": "version", "version": 4} and old["totals"]["points"] == 10
    assert now["program"] == {"source": "current", "version": 5} and now["totals"]["points"] == 30


def test_simulate_timers_fire_between_events(h):
    current = h.client.get("/admin/program", headers=A).json()["data"]
    rewards = [{"id": "POINTS", "name": "Points", "expires_after_days": 1}]
    events = [purchase(10, "2026-01-01T10:00:00Z"), purchase(5, "2026-01-05T10:00:00Z")]
    body = {"program": {**current, "rewards": rewards, "campaigns": [SPEND]}, "events": events}
    data = simulate(h, body).json()["data"]
    triggers = [s["trigger"] for s in data["steps"]]
    assert triggers == ["event", "timers", "event"]  # the 10 points expired in between
    assert data["customers"]["c1"]["points"] == 5


def test_simulate_errors_name_the_field(h):
    current = h.client.get("/admin/program", headers=A).json()["data"]
    at = "2026-01-01T10:00:00Z"
    cases = {
        "events": {"events": []},
        "events.1.type": {"events": [purchase(1, at), {"customer_id": "c1", "type": "NOPE"}]},
        "events.0.properties.amount": {"events": [purchase(-1, at)]},
        "customers.0.tier": {
            "customers": [{"customer_id": "c1", "tier": "gold"}],
            "events": [purchase(1, at)],
        },
        "customers.0.balances.STARS": {
            "customers": [{"customer_id": "c1", "balances": {"STARS": 5}}],
            "events": [purchase(1, at)],
        },  # fmt: skip
        "customers.1.customer_id": {
            "customers": [{"customer_id": "c1"}, {"customer_id": "c1"}],
            "events": [purchase(1, at)],
        },  # fmt: skip
        "version": {"version": 99, "events": [purchase(1, at)]},
        "program.campaigns.0.budget": {
            "program": {**current, "campaigns": [{**SPEND, "budget": "x"}]},
            "events": [purchase(1, at)],
        },  # fmt: skip
        "program": {
            "program": {**current, "campaigns": [{**SPEND, "formula": "x *"}]},
            "events": [purchase(1, at)],
        },
        "customers.0.metrics.purchase_count": {
            "customers": [{"customer_id": "c1", "metrics": {"purchase_count": -1}}],
            "events": [purchase(1, at)],
        },
    }
    for field, body in cases.items():
        resp = simulate(h, body)
        assert resp.status_code == 422, (field, resp.text)
        assert field in [f["path"] for f in error_of(resp)["fields"]], (field, resp.text)
    both = simulate(h, {"program": current, "version": 3, "events": [purchase(1, at)]})
    assert both.status_code == 422 and error_of(both)["fields"][0]["path"] == "version"
    assert h.client.post("/admin/simulate", json={"events": [purchase(1, at)]},
                         headers={"X-API-Key": "ik"}).status_code == 403  # fmt: skip


def test_simulate_a_referral_between_two_new_customers(h):
    current = h.client.get("/admin/program", headers=A).json()["data"]
    refer = {"id": "refer", "kind": "referral", "triggers": ["REGISTRATION"],
             "referral": {"referrer_points": 500, "referee_points": 100}}  # fmt: skip
    at1, at2 = "2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z"
    events = [
        {"customer_id": "alice", "type": "REGISTRATION", "issued_at": at1},
        {"customer_id": "bob", "type": "REGISTRATION", "issued_at": at2, "referral_code": "alice"},
    ]
    body = {"program": {**current, "campaigns": [refer]}, "events": events}
    data = simulate(h, body).json()["data"]
    assert data["customers"]["alice"]["points"] == 500 and data["customers"]["bob"]["points"] == 100


def test_simulate_is_in_the_openapi_spec(h):
    spec = h.client.get("/openapi.json").json()
    assert "post" in spec["paths"]["/admin/simulate"]
    assert {"StartingState", "SimulateIn"} <= set(spec["components"]["schemas"])
    # The events are documented as POST /behavior/events' own body, so fuzzers draw real ones.
    events = spec["components"]["schemas"]["SimulateIn"]["properties"]["events"]
    assert events["items"] == {"$ref": "#/components/schemas/EventIn"}
    params = [p["name"] for p in spec["paths"]["/admin/campaigns"]["post"]["parameters"]]
    assert "dry_run" in params and "dry_run" in str(spec["paths"]["/admin/program"]["put"])


def test_every_resource_supports_dry_run(h):
    for name, item in ITEMS.items():
        v = version_of(h)
        resp = h.client.post(f"/admin/{name}?dry_run=true", json=item, headers=dry(v))
        assert resp.status_code == 200 and resp.json()["version"] == v + 1, (name, resp.text)
        assert version_of(h) == v
