"""The program YAML in docs/audiences-journeys.md is valid and behaves as the docs say."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from processors.audiences.processor import build as build_audiences
from processors.audiences.rules import compile_program
from processors.journeys.processor import build as build_journeys
from processors.runtime.testing import TestDriver
from schemas.program import Program, load_program
from schemas.topics import AUDIENCES_MEMBERSHIP, EVENTS_LOYALTY, EVENTS_TRACKING, PROFILES_CHANGES

DOC = Path(__file__).resolve().parents[2] / "docs" / "audiences-journeys.md"
NOW = 1_700_000_000_000
MINUTE = 60_000
DAY = 24 * 60 * MINUTE


def documented_program() -> Program:
    block = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert block, "no yaml block in the docs"
    return Program.model_validate({"version": 1, **yaml.safe_load(block.group(1))})


def event(customer_id: str, type_: str, n: int) -> dict:
    return {"id": f"{customer_id}-{n}", "customer_id": customer_id, "type": type_,
            "issued_at": NOW, "received_at": NOW}  # fmt: skip


def test_documented_conditions_compile() -> None:
    compiled = compile_program(documented_program())
    assert all(a.condition is None or a.condition.program is not None for a in compiled.audiences)


def test_documented_cart_abandonment_both_ways() -> None:
    d = TestDriver(build_journeys(), documented_program(), now=NOW)
    d.send(EVENTS_TRACKING, "abandons", event("abandons", "ADD_TO_CART", 1))
    d.send(EVENTS_TRACKING, "buys", event("buys", "ADD_TO_CART", 1))
    d.advance(15 * MINUTE)
    d.send(EVENTS_LOYALTY, "buys", event("buys", "PURCHASE", 2))
    d.advance(15 * MINUTE)
    actions = [(a["customer_id"], a["action"]) for a in d.outputs("journeys.activity")
               if a["kind"] == "ACTION"]  # fmt: skip
    assert actions == [("abandons", "email")]


def test_documented_at_risk_audience_starts_winback() -> None:
    program = documented_program()
    audiences = TestDriver(build_audiences(), program, now=NOW)
    flat = {"customer_id": "c1", "purchase_count": 2, "last_event_at": NOW, "tier": "silver"}
    profile = {"customer_id": "c1", "updated_at": NOW, "profile": json.dumps(flat)}
    audiences.send(PROFILES_CHANGES, "c1", profile)
    out = audiences.advance(30 * DAY)
    enter = [v for t, _, v in out if t == AUDIENCES_MEMBERSHIP and v["audience_id"] == "at_risk"]
    assert [v["action"] for v in enter] == ["ENTER"]
    journeys = TestDriver(build_journeys(), program, now=NOW + 30 * DAY)
    journeys.send(PROFILES_CHANGES, "c1", profile)
    out = journeys.send(AUDIENCES_MEMBERSHIP, "c1", enter[0])
    assert [(v["kind"], v["action"]) for _, _, v in out if v["kind"] == "ACTION"] == [("ACTION", "push")]


def test_shipped_example_program_cart_abandonment_waits_30_minutes() -> None:
    """examples/program.yaml (what `make run` uses): the email goes out at 30 minutes, not
    before, and never for a customer who bought in between."""
    example = Path(__file__).resolve().parents[2] / "examples" / "program.yaml"
    program = load_program(example).model_copy(update={"version": 1})
    d = TestDriver(build_journeys(), program, now=NOW)
    d.send(EVENTS_TRACKING, "abandons", event("abandons", "ADD_TO_CART", 1))
    d.send(EVENTS_TRACKING, "buys", event("buys", "ADD_TO_CART", 1))
    d.send(EVENTS_LOYALTY, "buys", event("buys", "PURCHASE", 2))
    d.advance(29 * MINUTE)
    assert not [a for a in d.outputs("journeys.activity") if a["kind"] == "ACTION"]
    d.advance(1 * MINUTE)
    actions = [
        (a["customer_id"], a["action"]) for a in d.outputs("journeys.activity") if a["kind"] == "ACTION"
    ]
    assert actions == [("abandons", "email")]
