"""Fuzz the ingest API from its own OpenAPI spec (schemathesis: the server must agree with
the spec, valid and invalid inputs) and with raw bytes: no input may ever produce a 5xx.
Bounded so it runs in seconds."""

from __future__ import annotations

import json

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi import checks

from tests.unit.test_ingest_api import Harness, play_processor

HEADERS = {"X-API-Key": "both"}
FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def harness():
    h = Harness()
    h.lookup.events["e1"] = {"id": "e1", "customer_id": "c1", "type": "PURCHASE"}
    play_processor(h)  # ?wait=true answers at once instead of waiting for the timeout
    with TestClient(h.app) as client:
        h.client = client
        yield h


def _spec_harness() -> Harness:
    h = Harness()
    h.lookup.events["e1"] = {"id": "e1", "customer_id": "c1", "type": "PURCHASE"}
    play_processor(h)
    return h


# Every call goes to the app in-process (ASGI), so the checks that send requests of their own
# (unsupported methods and their Allow header, missing headers) reach it too.
# The /api/storefront/v1 copies (Masivo's base path) are the same routers mounted twice: fuzzing
# them too would double the run time and test nothing new (tests/unit/test_ingest_masivo.py
# checks the copies are served and listed).
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", _spec_harness().app).exclude(
    path_regex=r"^/api/storefront/"
)
# ignored_auth: the spec offers two schemes (X-API-Key or Bearer) and the check reads the other
# one's absence as auth being ignored.
EXCLUDED = [checks.ignored_auth]
# Valid per the spec is not enough here: an event's type must be defined in the current program
# and its properties match that type's JSON Schema, issued_at must be within 72 h of now, and a
# program's rules must compile (CEL) with valid event type schemas. A static spec cannot say so,
# so these two are checked for everything but accepting schema-valid data.
# The customer history lists likewise: a cursor must be one the service issued (it is opaque).
# A simulation's events, tiers and rewards must be those of the program it runs.
PROGRAM_DEPENDENT = {"POST /behavior/events", "PUT /admin/program", "POST /admin/simulate"} | {
    f"GET /customers/{{customer_id}}/{name}" for name in ("events", "ledger", "tiers")
}


def is_admin_write(label: str) -> bool:
    """Admin writes need If-Match naming the current version (state, not schema: a drawn value
    is 412 or 400) and answer 428 without it (RFC 6585), where schemathesis expects 400/422."""
    method, _, path = label.partition(" ")
    return path.startswith("/admin/") and method in ("POST", "PUT", "PATCH", "DELETE")


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_server_agrees_with_its_openapi_spec(case):
    """schemathesis' checks (all but ignored_auth) over its examples, coverage and fuzzing
    phases, valid and invalid inputs: no 5xx, documented status codes, headers and bodies,
    invalid input refused, valid input accepted, 405 with a correct Allow header."""
    excluded = list(EXCLUDED)
    if case.operation.label in PROGRAM_DEPENDENT or is_admin_write(case.operation.label):
        excluded.append(checks.positive_data_acceptance)
    if is_admin_write(case.operation.label):
        excluded.append(checks.missing_required_header)
    case.call_and_validate(headers=HEADERS, excluded_checks=excluded)


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
EVENTISH = st.fixed_dictionaries(
    {"customer_id": st.text(max_size=5), "type": st.sampled_from(["PURCHASE", "PAGE_VIEW", "X"])},
    optional={
        "properties": st.dictionaries(st.text(max_size=5), JSON, max_size=3),
        "issued_at": st.text(max_size=30),
        "reference": JSON,
        "redeem": JSON,
        "metadata": JSON,
    },
)


@FUZZ
@given(body=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_raw_bodies_never_5xx(harness, body):
    headers = {**HEADERS, "Content-Type": "application/json"}
    for path in ("/behavior/events", "/behavior/events/bulk", "/customers"):
        assert harness.client.post(path, content=body, headers=headers).status_code < 500


@FUZZ
@given(event=EVENTISH | JSON)
def test_eventish_bodies_never_5xx(harness, event):
    headers = {**HEADERS, "Content-Type": "application/json"}  # json.dumps: NaN passes through
    single = harness.client.post("/behavior/events", content=json.dumps(event), headers=headers)
    bulk_body = json.dumps({"events": [event]})
    bulk = harness.client.post("/behavior/events/bulk", content=bulk_body, headers=headers)
    assert single.status_code < 500 and bulk.status_code < 500
