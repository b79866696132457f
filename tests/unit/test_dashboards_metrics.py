"""Every metric a Grafana panel or a Prometheus alert names is defined in the code, so a typo or
a renamed metric fails here, without starting the stack. Also: the dashboard is well-formed
Grafana JSON on a Prometheus datasource variable, and every alert's runbook link points at a
section of docs/deploy.md."""

from __future__ import annotations

import json
import re

from tests.support.promql import (
    DASHBOARD,
    ROOT,
    alert_rules,
    dashboard_exprs,
    exposed_metrics,
    metric_names,
)

DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def test_the_scan_finds_the_known_metrics() -> None:
    names = exposed_metrics()
    expected = {"consumer_lag", "stream_dead_letters_total", "sink_rejects_total"}
    expected |= {"delivery_attempts_total", "delivery_latency_seconds_bucket", "ingest_requests_total"}
    expected |= {"loyalty_results_total", "stream_process_seconds_count"}
    assert expected <= names, expected - names


def test_every_service_shares_one_lag_metric() -> None:
    """Processors, delivery and the sink all report lag as consumer_lag{consumer,topic,partition}
    (plumbing/observability.py): alerts, dashboards and KEDA read one name."""
    assert {n for n in exposed_metrics() if "lag" in n} == {"consumer_lag"}
    for top in ("plumbing", "processors", "sinks"):
        for path in (ROOT / top).rglob("*.py"):
            assert "LAG.labels(" not in path.read_text() or path.name == "observability.py", path


def test_the_promql_scan() -> None:
    expr = 'sum by (le, route) (rate(ingest_request_seconds_bucket{status=~"5..", x!="a b"}[5m])) / on(x) up'
    assert metric_names(expr) == {"ingest_request_seconds_bucket", "up"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[$__rate_interval])))") == {
        "x_bucket"
    }


def test_every_panel_metric_is_defined() -> None:
    exposed = exposed_metrics()
    exprs = dashboard_exprs()
    assert len(exprs) > 20
    for title, expr in exprs:
        missing = metric_names(expr) - exposed
        assert not missing, f"panel {title!r} reads metrics no code defines: {missing}"


def test_every_alert_metric_is_defined() -> None:
    exposed = exposed_metrics()
    for rule in alert_rules():
        missing = metric_names(rule["expr"]) - exposed
        assert not missing, f"alert {rule['alert']} reads metrics no code defines: {missing}"


def test_the_dashboard_is_grafana_json_on_a_prometheus_variable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and target["refId"]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    heads = re.findall(r"^#+\s+(.+?)\s*$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_every_alert_has_a_runbook_section() -> None:
    anchors = _anchors(DEPLOY_DOC.read_text())
    for rule in alert_rules():
        link = rule["annotations"]["runbook"]
        doc, _, anchor = link.partition("#")
        assert doc == "docs/deploy.md" and anchor in anchors, f"{rule['alert']}: no section for {link}"
        assert rule["annotations"]["summary"]
