"""The admin API over the real broker and PostgreSQL: compare-and-set versions under concurrent
writers, rollback that restores what a purchase earns (the real loyalty processor), secrets
masked in every answer and in the audit table, and audit entries written through the sink."""

from __future__ import annotations

import threading

import psycopg
import pytest
from fastapi.testclient import TestClient

from ingest.app import create_app
from ingest.config import IngestConfig
from plumbing.config_table import VersionConflict, latest_version, publish_program
from processors.loyalty.processor import build
from processors.runtime.runner import Runner, RuntimeOptions
from processors.runtime.testing import wait_for
from schemas.program import Program
from schemas.settings import libpq_url

pytestmark = pytest.mark.integration
KEYS = {"k": frozenset({"ingest", "admin"})}
NAMES = {"k": "ops"}
SECRET = "whsec_aW50ZWdyYXRpb24tc2VjcmV0LW5ldmVyLXNob3du"
SPEND = {"id": "spend", "condition": "properties.amount > 0", "formula": "properties.amount"}


def headers(version: int | None = None) -> dict[str, str]:
    return {"X-API-Key": "k", **({"If-Match": f'"{version}"'} if version is not None else {})}


def app_for(settings):
    return create_app(settings, IngestConfig(api_keys=KEYS, api_key_names=NAMES))


def test_concurrent_publishes_with_one_expected_version_commit_once(settings):
    base = publish_program(settings, Program())
    results: list[int | str] = []

    def publish(i: int) -> None:
        try:
            results.append(publish_program(settings, Program(name=f"p{i}"), expected=base))
        except VersionConflict:
            results.append("conflict")

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, results)) == [str(base + 1), "conflict", "conflict", "conflict"]
    assert latest_version(settings) == base + 1
    # without an expected version every publish gets its own number
    free: list[int] = []
    threads = [threading.Thread(target=lambda: free.append(publish_program(settings, Program())))
               for _ in range(3)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(free) == [base + 2, base + 3, base + 4]


def test_two_ingest_instances_same_if_match_one_201_one_412(settings):
    version = publish_program(settings, Program())
    with TestClient(app_for(settings)) as one, TestClient(app_for(settings)) as two:
        answers: dict[str, int] = {}
        barrier = threading.Barrier(2)

        def create(name: str, client: TestClient, body: dict) -> None:
            barrier.wait()
            answers[name] = client.post(f"/admin/{name}", json=body, headers=headers(version)).status_code

        threads = [
            threading.Thread(target=create, args=("campaigns", one, SPEND)),
            threading.Thread(target=create, args=("rewards", two, {"id": "STARS"})),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(answers.values()) == [201, 412], answers
        assert latest_version(settings) == version + 1
        versions = wait_for(lambda: one.get("/admin/program/versions", headers=headers()).json()["data"],
                            timeout=30, what="history")  # fmt: skip
        assert [v["version"] for v in versions] == [version + 1] and versions[0]["actor"] == "ops"


def earned(client: TestClient, reference: str) -> float:
    body = {"customer_id": "c1", "type": "PURCHASE", "reference": reference, "properties": {"amount": 40}}
    resp = client.post("/behavior/events?wait=true&timeout=30", json=body, headers=headers())
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]["points"]


def test_rollback_restores_what_a_purchase_earns_and_everything_is_audited(sink_settings, tmp_path):
    cfg = sink_settings
    start = publish_program(cfg, Program())
    runner = Runner(build(), cfg, RuntimeOptions(state_dir=tmp_path, instance_id="l")).start()
    try:
        with TestClient(app_for(cfg)) as client:
            hook = {"id": "h1", "url": "https://example.com/h", "events": ["X"], "secret": SECRET}
            assert client.post("/admin/webhooks", json=hook, headers=headers(start)).status_code == 201
            resp = client.post("/admin/campaigns", json=SPEND, headers=headers(start + 1))
            assert resp.status_code == 201, resp.text
            single = resp.json()["version"]
            runner.program_table.wait_for_version(single, timeout=30)
            assert earned(client, "o1") == 40
            patch = {"formula": "properties.amount * 2"}
            resp = client.patch("/admin/campaigns/spend", json=patch, headers=headers(single))
            doubled = resp.json()["version"]
            runner.program_table.wait_for_version(doubled, timeout=30)
            assert earned(client, "o2") == 80
            stale = client.post("/admin/program/rollback", json={"version": single}, headers=headers(single))
            assert stale.status_code == 412
            back = client.post("/admin/program/rollback", json={"version": single}, headers=headers(doubled))
            assert back.status_code == 200, back.text
            runner.program_table.wait_for_version(back.json()["data"]["version"], timeout=30)
            assert earned(client, "o3") == 40  # what it earned under the old version
            assert runner.program_table.current().webhooks[0].secret == SECRET  # kept by the rollback

            def stored() -> list | None:
                got = client.get("/admin/audit", headers=headers()).json()["data"]
                return got if len(got) == 4 else None

            audit = wait_for(stored, timeout=60, what="the sink to store the audit entries")
            assert [e["action"] for e in audit] == ["rollback", "patch", "create", "create"]
            assert all(e["actor"] == "ops" for e in audit)
            assert audit[1]["changes"][0]["path"] == "campaigns[spend].formula"
            bodies = "".join(client.get(p, headers=headers()).text for p in (
                "/admin/program", "/admin/webhooks", "/admin/webhooks/h1", "/admin/program/versions",
                f"/admin/program/versions/{start + 1}", f"/admin/program/versions/{start + 1}/diff/{doubled}",
                "/admin/audit"))  # fmt: skip
            assert "h1" in bodies and SECRET not in bodies
    finally:
        runner.stop()
    with psycopg.connect(libpq_url(cfg.database_url)) as conn:
        rows = conn.execute("SELECT actor, resource, changes::text, summary FROM admin_audit").fetchall()
    assert len(rows) == 4 and SECRET not in repr(rows)
    assert {r[1] for r in rows} == {"webhooks/h1", "campaigns/spend", f"program/versions/{single}"}


def test_config_apply_goes_through_the_same_versions_and_keeps_secret_references(settings, tmp_path):
    from deploy.cli import apply_config
    from ingest.history import KafkaHistory
    from plumbing.config_table import latest_program

    path = tmp_path / "program.yaml"
    hook = "{id: h1, url: 'https://example.com/h', events: [X], secret: '${UNSET_REF}'}"
    path.write_text(f"webhooks:\n  - {hook}\n")
    assert apply_config(str(path)) == 0  # UNSET_REF need not be set where apply runs
    program = latest_program(settings)
    assert program.webhooks[0].secret == "${UNSET_REF}"
    entry = KafkaHistory(settings).versions()[-1]
    assert entry["version"] == program.version and entry["action"] == "config.apply"
    assert entry["program"]["webhooks"][0]["secret"] == "${UNSET_REF}"
