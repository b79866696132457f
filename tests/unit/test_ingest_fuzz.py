"""Fuzz the ingest API from its own OpenAPI spec (schemathesis, valid and invalid inputs) and
with raw bytes: no input may ever produce a 5xx. Bounded so it runs in seconds."""

from __future__ import annotations

import json

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

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


SCHEMA = schemathesis.openapi.from_dict(Harness().app.openapi())
OPERATIONS = [op.ok() for op in SCHEMA.get_all_operations()]
# Negative inputs need something to break: operations without parameters have none.
CASES = [
    pytest.param(op, mode, id=f"{op.label}-{mode.value}")
    for op in OPERATIONS
    for mode in schemathesis.GenerationMode
    if mode is schemathesis.GenerationMode.POSITIVE or op.path != "/healthz"
]


def _send(client: TestClient, case) -> int:
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=HEADERS)
    if "data" in kwargs:
        kwargs["content"] = kwargs.pop("data")
    kwargs.pop("cookies", None)
    return client.request(**kwargs).status_code


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_openapi_fuzz_never_5xx(harness, operation, mode):
    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        status = _send(harness.client, case)
        assert status < 500, case.as_curl_command(headers=HEADERS)

    run()


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
