"""The admin API without Kafka: resource endpoints, If-Match/ETag, merge patch, write-only
secrets, versions, rollback and the audit log (StaticPrograms plays program.config, its history
and the audit table with the publisher's semantics)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from ingest.changes import MASK
from ingest.programs import StaticPrograms
from tests.unit.test_ingest_api import Harness, error_of

SECRET = "whsec_c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1sZWFr"
OLD_SECRET = "whsec_b2xkLXNlY3JldC1zdGlsbC12YWxpZA=="
A = {"X-API-Key": "ak"}
PATCH = {"Content-Type": "application/merge-patch+json"}
HOOK = {"id": "h1", "url": "https://example.com/hook", "events": ["CUSTOMER_ACCUMULATION"],
        "secret": SECRET, "previous_secrets": [OLD_SECRET]}  # fmt: skip
ITEMS = {
    "event-types": {"name": "APP_OPEN", "path": "tracking"},
    "rewards": {"id": "STARS", "name": "Stars"},
    "campaigns": {"id": "spend", "condition": "properties.amount > 0", "formula": "properties.amount"},
    "tiers": {"id": "gold", "name": "Gold", "level": 1, "entry": "profile.lifetime_points >= 100"},
    "traits": {"name": "big", "expression": "profile.total_spend > 100"},
    "audiences": {"id": "vip", "condition": "profile.lifetime_points > 10"},
    "journeys": {"id": "welcome", "entry_event": "REGISTRATION",
                 "nodes": [{"id": "s", "kind": "start"}, {"id": "e", "kind": "end"}],
                 "edges": [{"from": "s", "to": "e"}]},  # fmt: skip
    "webhooks": HOOK,
    "destinations": {"id": "d1", "url": "https://example.com/d", "secret": SECRET},
}
KEYS = {"event-types": "name", "traits": "name"}


@pytest.fixture
def h():
    harness = Harness()
    with TestClient(harness.app) as client:
        harness.client = client
        yield harness


def match(version: int | str) -> dict[str, str]:
    return {**A, "If-Match": version if version == "*" else f'"{version}"'}


def version_of(h) -> int:
    return h.programs.current().version


def test_program_get_has_an_etag_and_writes_need_if_match(h):
    resp = h.client.get("/admin/program", headers=A)
    assert resp.headers["ETag"] == '"3"'
    body = resp.json()["data"]
    assert h.client.put("/admin/program", json=body, headers=A).status_code == 428
    assert error_of(h.client.put("/admin/program", json=body, headers=A))["code"] == "precondition_required"
    stale = h.client.put("/admin/program", json=body, headers=match(2))
    assert stale.status_code == 412 and stale.headers["ETag"] == '"3"'
    assert h.client.put("/admin/program", json=body, headers={**A, "If-Match": "nope"}).status_code == 400
    ok = h.client.put("/admin/program", json=body, headers=match(3))
    assert ok.status_code == 200 and ok.headers["ETag"] == '"4"' and ok.json()["data"]["version"] == 4
    assert h.client.put("/admin/program", json=body, headers={**A, "If-Match": 'W/"4"'}).status_code == 200
    assert h.client.put("/admin/program", json=body, headers=match("*")).status_code == 200
    assert version_of(h) == 6


def test_two_writers_with_the_same_if_match_one_wins(h):
    first = h.client.post("/admin/campaigns", json=ITEMS["campaigns"], headers=match(3))
    second = h.client.post("/admin/rewards", json=ITEMS["rewards"], headers=match(3))
    assert (first.status_code, second.status_code) == (201, 412)
    assert version_of(h) == 4 and [r.id for r in h.programs.current().rewards] == ["POINTS"]


def test_every_resource_list_create_get_replace_patch_delete(h):
    for name, item in ITEMS.items():
        key = KEYS.get(name, "id")
        ident = item[key]
        v = version_of(h)
        created = h.client.post(f"/admin/{name}", json=item, headers=match(v))
        assert created.status_code == 201, (name, created.text)
        assert created.headers["ETag"] == f'"{v + 1}"' and created.json()["version"] == v + 1
        assert created.headers["Location"] == f"/admin/{name}/{ident}"
        again = h.client.post(f"/admin/{name}", json=item, headers=match(v + 1))
        assert again.status_code == 409, name
        listed = h.client.get(f"/admin/{name}", headers=A)
        assert ident in [i[key] for i in listed.json()["data"]] and listed.headers["ETag"] == f'"{v + 1}"'
        got = h.client.get(f"/admin/{name}/{ident}", headers=A)
        assert got.status_code == 200 and got.json()["data"][key] == ident
        replaced = h.client.put(f"/admin/{name}/{ident}", json=got.json()["data"], headers=match(v + 1))
        assert replaced.status_code == 200, (name, replaced.text)
        patched = h.client.patch(f"/admin/{name}/{ident}", content=b"{}", headers={**match(v + 2), **PATCH})
        assert patched.status_code == 200, (name, patched.text)
        assert h.client.get(f"/admin/{name}/nope", headers=A).status_code == 404
        assert h.client.delete(f"/admin/{name}/nope", headers=match(v + 3)).status_code == 404
        deleted = h.client.delete(f"/admin/{name}/{ident}", headers=match(v + 3))
        assert deleted.status_code == 200 and deleted.json()["version"] == v + 4, (name, deleted.text)
        assert h.client.get(f"/admin/{name}/{ident}", headers=A).status_code == 404


def test_campaign_patch_merges_and_invalid_results_name_fields(h):
    h.client.post("/admin/campaigns", json=ITEMS["campaigns"], headers=match(3))
    patch = {"formula": "properties.amount * 2", "name": None}
    resp = h.client.patch("/admin/campaigns/spend", json=patch, headers={**match(4), **PATCH})
    assert resp.status_code == 200 and resp.json()["data"]["formula"] == "properties.amount * 2"
    assert resp.json()["data"]["condition"] == "properties.amount > 0"  # kept
    as_json = h.client.patch("/admin/campaigns/spend", json={"enabled": False}, headers=match(5))
    assert as_json.status_code == 200 and as_json.json()["data"]["enabled"] is False
    plain = {**match(6), "Content-Type": "text/plain"}
    text = h.client.patch("/admin/campaigns/spend", content=b"{}", headers=plain)
    assert text.status_code == 415
    bad = h.client.patch("/admin/campaigns/spend", json={"formula": "properties.amount *"}, headers=match(6))
    assert bad.status_code == 422 and "campaign spend formula" in error_of(bad)["fields"][0]["reason"]
    lax = h.client.patch("/admin/campaigns/spend", json={"budget": "10"}, headers=match(6))
    assert lax.status_code == 422 and error_of(lax)["fields"][0]["path"] == "campaigns.0.budget"
    rename = h.client.put("/admin/campaigns/spend", json={**ITEMS["campaigns"], "id": "x"}, headers=match(6))
    assert rename.status_code == 422 and error_of(rename)["fields"][0]["path"] == "id"
    no_id = h.client.post("/admin/campaigns", json={"formula": "1"}, headers=match(6))
    assert no_id.status_code == 422 and error_of(no_id)["fields"][0]["path"] == "id"
    in_use = h.client.delete("/admin/rewards/POINTS", headers=match(6))
    assert in_use.status_code == 422 and "unknown reward_id" in error_of(in_use)["fields"][0]["reason"]
    assert h.client.delete("/admin/event-types/PURCHASE", headers=match(6)).status_code == 409
    assert version_of(h) == 6  # nothing refused was published


def test_program_patch_merges_a_partial_program(h):
    h.client.post("/admin/campaigns", json=ITEMS["campaigns"], headers=match(3))
    resp = h.client.patch("/admin/program", json={"rounding": "ceil", "tiers": {"reporting_period_days": 30}},
                          headers={**match(4), **PATCH})  # fmt: skip
    assert resp.status_code == 200, resp.text
    program = h.programs.current()
    assert program.rounding == "ceil" and program.tiers.reporting_period_days == 30
    assert [c.id for c in program.campaigns] == ["spend"]  # untouched sections stay
    assert h.client.patch("/admin/program", json=[1], headers=match(5)).status_code == 422


def all_bodies(h) -> str:
    """Every admin read, concatenated: where a secret must never appear."""
    paths = ["/admin/program", "/admin/webhooks", "/admin/webhooks/h1", "/admin/destinations",
             "/admin/destinations/d1", "/admin/program/versions", "/admin/audit"]  # fmt: skip
    versions = [v["version"] for v in h.client.get("/admin/program/versions", headers=A).json()["data"]]
    paths += [f"/admin/program/versions/{v}" for v in versions]
    paths += [f"/admin/program/versions/{a}/diff/{b}" for a in versions for b in versions]
    return "".join(h.client.get(p, headers=A).text for p in paths)


def test_secrets_are_write_only_and_kept_when_omitted_or_masked(h):
    created = h.client.post("/admin/webhooks", json=HOOK, headers=match(3))
    assert created.status_code == 201
    assert created.json()["data"]["secret"] == MASK and created.json()["data"]["previous_secrets"] == [MASK]
    h.client.post("/admin/destinations", json=ITEMS["destinations"], headers=match(4))
    # GET, edit, PUT back (masked values) keeps the secrets
    program = h.client.get("/admin/program", headers=A).json()["data"]
    program["webhooks"][0]["url"] = "https://example.com/v2"
    assert h.client.put("/admin/program", json=program, headers=match(5)).status_code == 200
    hook = h.programs.current().webhooks[0]
    assert (hook.url, hook.secret, hook.previous_secrets) == ("https://example.com/v2", SECRET, [OLD_SECRET])
    # an item PUT without the secret keeps it; a merge patch of another field too
    item = {k: v for k, v in HOOK.items() if k not in ("secret", "previous_secrets")}
    assert h.client.put("/admin/webhooks/h1", json=item, headers=match(6)).status_code == 200
    assert h.client.patch("/admin/webhooks/h1", json={"enabled": False}, headers=match(7)).status_code == 200
    assert h.programs.current().webhooks[0].secret == SECRET
    assert SECRET not in all_bodies(h) and OLD_SECRET not in all_bodies(h)
    # a masked value for an endpoint with nothing stored is refused; "" clears
    fresh = {**HOOK, "id": "h2", "secret": MASK}
    bad = h.client.post("/admin/webhooks", json=fresh, headers=match(8))
    assert bad.status_code == 422 and error_of(bad)["fields"][0]["path"] == "webhooks.1.secret"
    cleared = h.client.patch("/admin/webhooks/h1", json={"secret": ""}, headers=match(8))
    assert cleared.status_code == 200 and h.programs.current().webhooks[0].secret == ""


def test_secret_references_are_shown_and_stored_as_references(h):
    hook = {**HOOK, "secret": "${HOOK_SECRET}", "previous_secrets": []}
    assert h.client.post("/admin/webhooks", json=hook, headers=match(3)).status_code == 201
    assert h.programs.current().webhooks[0].secret == "${HOOK_SECRET}"
    assert h.client.get("/admin/webhooks/h1", headers=A).json()["data"]["secret"] == "${HOOK_SECRET}"


def test_openapi_lists_every_resource_operation(h):
    paths = h.client.get("/openapi.json").json()["paths"]
    for name in ITEMS:
        assert set(paths[f"/admin/{name}"]) == {"get", "post"}
        assert set(paths[f"/admin/{name}/{{item_id}}"]) == {"get", "put", "patch", "delete"}
        put = paths[f"/admin/{name}/{{item_id}}"]["put"]
        assert {"412", "428", "404"} <= set(put["responses"])
    assert set(paths["/admin/program"]) == {"get", "put", "patch"}
    assert json.dumps(paths).count('"If-Match"') >= 9 * 4 + 2


def test_versions_diff_and_rollback(h):
    h.client.post("/admin/campaigns", json=ITEMS["campaigns"], headers=match(3))
    h.client.patch("/admin/campaigns/spend", json={"formula": "properties.amount * 2"}, headers=match(4))
    versions = h.client.get("/admin/program/versions", headers=A).json()["data"]
    assert [v["version"] for v in versions] == [5, 4]  # newest first
    assert versions[0]["actor"] == "key-" + __import__("hashlib").sha256(b"ak").hexdigest()[:8]
    assert versions[0]["summary"] == "campaigns[spend] changed"
    assert versions[1]["summary"] == "campaigns[spend] added"
    assert versions[0]["action"] == "patch" and versions[0]["resource"] == "campaigns/spend"
    old = h.client.get("/admin/program/versions/4", headers=A).json()["data"]
    assert old["version"] == 4 and old["campaigns"][0]["formula"] == "properties.amount"
    assert h.client.get("/admin/program/versions/99", headers=A).status_code == 404
    diff = h.client.get("/admin/program/versions/4/diff/5", headers=A).json()["data"]
    assert diff["changes"] == [{"path": "campaigns[spend].formula", "before": "properties.amount",
                                "after": "properties.amount * 2"}]  # fmt: skip
    assert h.client.post("/admin/program/rollback", json={"version": 4}, headers=A).status_code == 428
    assert h.client.post("/admin/program/rollback", json={"version": 4}, headers=match(4)).status_code == 412
    lax = h.client.post("/admin/program/rollback", json={"version": "4"}, headers=match(5))
    assert lax.status_code == 422
    resp = h.client.post("/admin/program/rollback", json={"version": 4}, headers=match(5))
    assert resp.status_code == 200 and resp.json()["data"] == {"version": 6, "rolled_back_to": 4}
    assert h.programs.current().campaigns[0].formula == "properties.amount"
    latest = h.client.get("/admin/program/versions", headers=A).json()["data"][0]
    assert (latest["version"], latest["action"], latest["resource"]) == (6, "rollback", "program/versions/4")


def test_rollback_keeps_current_secrets_and_refuses_a_lost_one(h):
    h.client.post("/admin/webhooks", json=HOOK, headers=match(3))
    h.client.patch("/admin/webhooks/h1", json={"url": "https://example.com/v2"}, headers=match(4))
    assert h.client.post("/admin/program/rollback", json={"version": 4}, headers=match(5)).status_code == 200
    hook = h.programs.current().webhooks[0]
    assert (hook.url, hook.secret) == ("https://example.com/hook", SECRET)
    h.client.delete("/admin/webhooks/h1", headers=match(6))
    lost = h.client.post("/admin/program/rollback", json={"version": 4}, headers=match(7))
    assert lost.status_code == 422 and error_of(lost)["fields"][0]["path"] == "webhooks.0.secret"
    stored = json.dumps([r[2].decode("latin1") for r in h.programs.records])  # history + audit
    assert SECRET not in all_bodies(h) and SECRET not in stored


def test_audit_log_records_every_write_with_filters_and_pages(h):
    h.client.post("/admin/webhooks", json=HOOK, headers=match(3))
    h.client.post("/admin/campaigns", json=ITEMS["campaigns"], headers=match(4))
    h.client.delete("/admin/campaigns/spend", headers=match(5))
    h.client.patch("/admin/webhooks/h1", json={"secret": "whsec_bmV3LXNlY3JldC12YWx1ZQ=="}, headers=match(6))
    page = h.client.get("/admin/audit", headers=A).json()
    entries = page["data"]
    assert [(e["action"], e["resource"], e["version_before"], e["version_after"]) for e in entries] == [
        ("patch", "webhooks/h1", 6, 7), ("delete", "campaigns/spend", 5, 6),
        ("create", "campaigns/spend", 4, 5), ("create", "webhooks/h1", 3, 4),
    ]  # fmt: skip
    assert entries[0]["changes"] == [{"path": "webhooks[h1].secret", "before": MASK, "after": MASK}]
    assert entries[3]["changes"][0]["after"]["secret"] == MASK
    assert "bmV3LXNlY3JldC12YWx1ZQ" not in json.dumps(entries) and SECRET not in json.dumps(entries)
    only = h.client.get("/admin/audit?resource=campaigns&action=create", headers=A).json()["data"]
    assert [e["resource"] for e in only] == ["campaigns/spend"]
    first = h.client.get("/admin/audit?limit=3", headers=A).json()
    assert len(first["data"]) == 3 and first["next_offset"] == 3
    rest = h.client.get("/admin/audit?limit=3&offset=3", headers=A).json()
    assert len(rest["data"]) == 1 and rest["next_offset"] is None
    assert h.client.get("/admin/audit?since=2999-01-01T00:00:00Z", headers=A).json()["data"] == []
    assert h.client.get("/admin/audit?actor=nobody", headers=A).json()["data"] == []


class LaggingTable(StaticPrograms):
    """program.config as an instance's table sees it: a publish shows in `current()` only
    once the table has read it (here: when someone waits for it)."""

    def __init__(self, program) -> None:
        super().__init__(program)  # self.program: the topic's latest, which a publish reads
        self.shown = self.program

    def current(self):
        return self.shown

    def wait_for_version(self, version: int, timeout: float = 10.0):
        self.shown = self.program
        return self.shown


def test_a_write_answers_once_this_instance_reads_it_back():
    """Two writes in a row with If-Match: * both land, and a GET right after shows the second:
    a write waits for this instance's table to hold its version before it answers."""
    harness = Harness()
    lagging = LaggingTable(harness.programs.program)
    with TestClient(harness.app) as client:
        harness.app.state.ingest.programs = lagging  # the state is built at start-up
        harness.app.state.ingest.publisher = lagging.publish
        start = lagging.current().version
        for name in ("one", "two"):
            body = {**ITEMS["campaigns"], "id": name}
            resp = client.post("/admin/campaigns", json=body, headers=match("*"))
            assert resp.status_code == 201, resp.text
        got = client.get("/admin/program", headers=A)
        assert got.headers["ETag"] == f'"{start + 2}"'
        assert {"one", "two"} <= {c["id"] for c in got.json()["data"]["campaigns"]}
