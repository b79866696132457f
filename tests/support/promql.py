"""PromQL names in the shipped Grafana dashboard and Prometheus alerts, and the metric names the
source defines: shared by the unit scan (tests/unit/test_dashboards_metrics.py) and the live
check on a running stack (tests/e2e/test_example_program.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "loyalty.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
SOURCES = ("ingest", "processors", "sinks", "schemas", "plumbing", "deploy")

METRIC_CALL = re.compile(
    r'\b(Counter|Gauge|Histogram|Summary|CounterMetricFamily|GaugeMetricFamily)\(\s*"([a-z_:][a-z0-9_:]*)"'
)
# a custom collector that yields CounterMetricFamily(name, ...) from (name, doc, label, counts) tuples
COLLECTOR_TUPLE = re.compile(r'\(\s*"([a-z_]+)",\s*"[^"]*",\s*"[a-z_]+",\s*\w+\s*\)')

PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def exposed_metrics() -> set[str]:
    """Names the services expose: counters as <name>_total, histograms as _bucket/_sum/_count."""
    names: set[str] = set()
    for top in SOURCES:
        for path in (ROOT / top).rglob("*.py"):
            text = path.read_text()
            found = [(kind, name) for kind, name in METRIC_CALL.findall(text)]
            if "CounterMetricFamily" in text:
                found += [("CounterMetricFamily", name) for name in COLLECTOR_TUPLE.findall(text)]
            for kind, name in found:
                if kind in ("Counter", "CounterMetricFamily"):
                    names.add(name if name.endswith("_total") else f"{name}_total")
                elif kind in ("Histogram", "Summary"):
                    names |= {f"{name}_sum", f"{name}_count"} | (
                        {f"{name}_bucket"} if kind == "Histogram" else set()
                    )
                else:
                    names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords and labels left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, regexes
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # selectors' label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    words = re.findall(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr)
    return {w for w in words if w.lower() not in PROMQL_WORDS}


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
