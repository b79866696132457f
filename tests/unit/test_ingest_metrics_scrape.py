"""/metrics of a multi-worker ingest sums every worker's file, and a worker whose file is
still being created (a replacement starting) does not fail the scrape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
WORKER = """
from ingest import metrics
metrics.child(metrics.REQUESTS, "events", "202").inc(3)
"""


def samples(text: bytes) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}  # fmt: skip


def test_a_file_being_created_by_a_starting_worker_does_not_fail_the_scrape(tmp_path, monkeypatch):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):  # two workers that counted, each in its own process and file
        subprocess.run([sys.executable, "-c", WORKER], check=True, env=env, cwd=ROOT)
    (tmp_path / "counter_424242.db").touch()  # created, not yet sized: the moment a worker starts
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    from ingest import metrics

    scraped = samples(metrics.scrape())
    assert scraped[("ingest_requests_total", (("route", "events"), ("status", "202")))] == 6
