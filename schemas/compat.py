"""Backward compatibility of Avro schemas: can the new schema read data the old one wrote?

Checked by resolving writer (old) to reader (new) on generated sample records with fastavro,
which applies the Avro spec's resolution rules (new fields need defaults, type promotions, ...).
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

ROOT = Path(__file__).resolve().parent.parent


def incompatibility(old: dict, new: dict, samples: int = 20) -> str | None:
    """None when `new` can read everything `old` writes, else the reason."""
    writer = parse_schema(old, _write_hint=False)
    reader = parse_schema(new, _write_hint=False)
    for record in generate_many(writer, samples):
        buf = io.BytesIO()
        schemaless_writer(buf, writer, record)
        buf.seek(0)
        try:
            schemaless_reader(buf, writer, reader)
        except Exception as exc:  # fastavro raises SchemaResolutionError and friends
            return f"{type(exc).__name__}: {exc}"
    return None


def committed_versions(path: Path) -> list[tuple[str, dict]]:
    """Every committed version of a schema file: [(commit, schema)], newest first."""
    rel = path.resolve().relative_to(ROOT)
    try:
        commits = subprocess.run(
            ["git", "log", "--format=%H", "--", str(rel)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return []
    versions = []
    for commit in commits:
        shown = subprocess.run(["git", "show", f"{commit}:{rel}"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode == 0:
            versions.append((commit, json.loads(shown.stdout)))
    return versions
