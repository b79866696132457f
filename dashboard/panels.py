"""The JSON a page renders: stat cards and panels, each a chart plus the table of its numbers.

The table is built from the same rows as the chart, so what a person reads under a chart is
exactly what it draws (and what the browser tests compare against SQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

Row = dict[str, Any]


def number(value: Any) -> Any:
    """JSON-friendly numbers: integral floats become ints, others are rounded to 2 places."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else round(value, 2)
    if value is not None and type(value).__name__ == "Decimal":
        return number(float(value))
    return value


def cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return number(value)


def stat(id_: str, label: str, value: Any) -> dict:
    return {"id": id_, "label": label, "value": number(value if value is not None else 0)}


def series_panel(
    id_: str,
    title: str,
    rows: Iterable[Row],
    buckets: Sequence[datetime],
    kind: str = "bar",
    total: bool = True,
) -> dict:
    """rows of (bucket, series, value) -> one dataset per series over every bucket; the table has
    one row per non-empty bucket and one column per series, plus the total when sums mean something."""
    grid: dict[str, dict[datetime, float]] = {}
    for row in rows:
        grid.setdefault(str(row["series"]), {})[row["bucket"]] = row["value"] or 0
    names = sorted(grid)
    datasets = [{"label": s, "data": [number(grid[s].get(b, 0)) for b in buckets]} for s in names]
    filled = sorted({b for s in names for b in grid[s]}, reverse=True)
    table = [
        [b.isoformat(), *(number(grid[s].get(b, 0)) for s in names)]
        + ([number(sum(grid[s].get(b, 0) for s in names))] if total else [])
        for b in filled
    ]
    chart = {
        "type": kind,
        "stacked": kind == "bar",
        "labels": [b.isoformat() for b in buckets],
        "datasets": datasets,
    }
    return {
        "id": id_,
        "title": title,
        "chart": chart,
        "table": {"columns": ["bucket", *names, *(["total"] if total else [])], "rows": table},
    }


def category_panel(
    id_: str,
    title: str,
    rows: Sequence[Row],
    label: str,
    values: Sequence[str],
    kind: str = "bar",
    extra: Sequence[str] = (),
) -> dict:
    """rows with a label column and value columns -> one dataset per value column; `extra`
    columns appear only in the table."""
    labels = [str(r[label]) for r in rows]
    datasets = [{"label": v, "data": [number(r[v] or 0) for r in rows]} for v in values]
    table = [[cell(r[c]) for c in (label, *values, *extra)] for r in rows]
    chart = {"type": kind, "stacked": False, "labels": labels, "datasets": datasets}
    return {
        "id": id_,
        "title": title,
        "chart": chart,
        "table": {"columns": [label, *values, *extra], "rows": table},
    }


def table_panel(id_: str, title: str, rows: Sequence[Row], columns: Sequence[str]) -> dict:
    """A panel with no chart (customer lookup lists, top-N tables)."""
    return {
        "id": id_,
        "title": title,
        "chart": None,
        "table": {"columns": list(columns), "rows": [[cell(r.get(c)) for c in columns] for r in rows]},
    }


def progress_panel(
    id_: str, title: str, rows: Sequence[Row], label: str, pct: str, columns: Sequence[str]
) -> dict:
    """One horizontal bar per row, `pct` used and the rest left, on a 0-100 axis (budget use);
    the table has `label` and `columns` (which should include `pct`)."""
    used = [min(max(number(r[pct] or 0), 0), 100) for r in rows]
    chart = {
        "type": "bar",
        "stacked": True,
        "horizontal": True,
        "max": 100,
        "labels": [str(r[label]) for r in rows],
        "datasets": [  # colours of their own: used in the accent, what is left in grey
            {"label": "% used", "data": used, "backgroundColor": "#5b8ee6"},
            {"label": "% left", "data": [number(100 - u) for u in used], "backgroundColor": "#dde2e8"},
        ],
    }
    table = [[cell(r[c]) for c in (label, *columns)] for r in rows]
    return {"id": id_, "title": title, "chart": chart, "table": {"columns": [label, *columns], "rows": table}}
