"""Ingest input rules beyond the program's JSON Schemas (docs/ingest.md, "Input rules"): no
control characters in any string or key, ids in paths included; strict booleans and integers;
integers within 64 bits; amounts within 1e12. Each was accepted (or a 500) before."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from ingest.inputs import problems, suspect
from tests.unit.test_ingest_api import H, Harness, error_of, purchase


@pytest.fixture
def h():
    harness = Harness()
    with TestClient(harness.app) as client:
        harness.client = client
        yield harness


def paths(resp) -> list[str]:
    assert resp.status_code == 422, resp.text
    return [f["path"] for f in error_of(resp)["fields"]]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (purchase(properties={"amount": 3, "note": "a\u0000b"}), "properties.note"),
        (purchase(customer_id="a\u0000b"), "customer_id"),
        (purchase(properties={"amount": 3, "k\u0000": 1}), "properties.k\u0000"),
        (purchase(metadata={"x": [{"y": "bell\u0007"}]}), "metadata.x.0.y"),
        (purchase(tags=["ok", "back\bspace"]), "tags.1"),
        (purchase(reference="form\ffeed"), "reference"),
        (purchase(properties={"amount": 3, "deep": {"a": {"b": ["\u001f"]}}}), "properties.deep.a.b.0"),
    ],
)
def test_control_characters_anywhere_in_an_event_are_refused(h, body, path):
    resp = h.client.post("/behavior/events", json=body, headers=H)
    assert path in paths(resp)
    assert h.producer.sent == []


def test_tab_newline_return_and_other_text_pass(h):
    body = purchase(properties={"amount": 3, "note": "a\tb\nc\r\u00e9\u0100 \\u0000 literal"})
    assert h.client.post("/behavior/events", json=body, headers=H).status_code == 202
    assert json.loads(h.producer.sent[0][2]["properties"])["note"].startswith("a\tb\nc\r")


def test_bulk_refuses_only_the_items_with_control_characters(h):
    events = [purchase(), purchase(properties={"amount": 1, "n": "x\u0000"}), purchase()]
    body = h.client.post("/behavior/events/bulk", json={"events": events}, headers=H).json()
    assert [i["status"] for i in body["data"]] == ["accepted", "rejected", "accepted"]
    assert body["data"][1]["errors"][0]["path"] == "properties.n"
    assert len(h.producer.sent) == 2


def test_customers_and_commands_refuse_control_characters(h):
    customer = {"customer_id": "c1", "customer": {"name": "Ana\u0000"}}
    assert paths(h.client.post("/customers", json=customer, headers=H)) == ["customer.name"]
    assert "customer_id" in paths(h.client.post("/customers", json={"customer_id": "\u0000"}, headers=H))
    reverse = {"reason": "re\u0000fund", "customer_id": "c1"}
    assert "reason" in paths(h.client.post("/behavior/events/e1/reverse", json=reverse, headers=H))
    assert h.producer.sent == []


@pytest.mark.parametrize(
    ("method", "url", "name"),
    [
        ("GET", "/behavior/events/%00", "event_id"),
        ("GET", "/behavior/events/a%00b", "event_id"),
        ("GET", "/customers/%00/wallet", "customer_id"),
        ("GET", "/customers/a%00b/wallet", "customer_id"),
        ("PATCH", "/customers/a%01b/identify", "customer_id"),
        ("POST", "/behavior/events/a%00b/cancel", "event_id"),
    ],
)
def test_control_characters_in_path_ids_are_422_naming_the_parameter(h, method, url, name):
    resp = h.client.request(method, url, headers=H)
    assert paths(resp) == [name]


def test_booleans_must_be_booleans(h):
    yes = {"purposes": {"email_marketing": "yes"}}
    assert paths(h.client.patch("/customers/c1/consent", json=yes, headers=H)) == ["purposes.email_marketing"]
    one = {"purposes": {"email_marketing": 1}}
    assert paths(h.client.patch("/customers/c1/consent", json=one, headers=H)) == ["purposes.email_marketing"]
    assert paths(h.client.post("/customers", json={"customer_id": "c1", "anonymous": 0}, headers=H)) == [
        "anonymous"
    ]
    assert "migrated" in paths(
        h.client.post("/customers", json={"customer_id": "c1", "migrated": "true"}, headers=H)
    )
    assert "fulfilled" in paths(h.client.post("/behavior/events", json=purchase(fulfilled=1), headers=H))
    assert "reserve" in paths(h.client.post("/behavior/events", json=purchase(reserve="5"), headers=H))
    assert "issued_at" in paths(
        h.client.post("/behavior/events", json=purchase(issued_at=1_800_000_000), headers=H)
    )
    assert h.producer.sent == []
    ok = {"purposes": {"email_marketing": True}}
    assert h.client.patch("/customers/c1/consent", json=ok, headers=H).status_code == 202


@pytest.mark.parametrize("amount", [2**70, 1e12 + 1, -(2**63), 1e300])
def test_amounts_over_the_bound_are_refused(h, amount):
    resp = h.client.post("/behavior/events", json=purchase(properties={"amount": amount}), headers=H)
    assert "properties.amount" in paths(resp)
    assert h.producer.sent == []


def test_amounts_up_to_the_bound_pass_and_stay_exact(h):
    assert (
        h.client.post("/behavior/events", json=purchase(properties={"amount": 10**12}), headers=H).status_code
        == 202
    )
    assert json.loads(h.producer.sent[0][2]["properties"]) == {"amount": 10**12}
    redeem = purchase(redeem=[{"reward_id": "POINTS", "amount": 2e12}])
    assert "redeem.0.amount" in paths(h.client.post("/behavior/events", json=redeem, headers=H))


def test_integers_beyond_64_bits_are_refused_anywhere(h):
    big = purchase(metadata={"n": 2**63})
    assert paths(h.client.post("/behavior/events", json=big, headers=H)) == ["metadata.n"]
    huge = purchase(properties={"amount": 1, "count": 2**70})  # orjson alone reads this as a float
    assert paths(h.client.post("/behavior/events", json=huge, headers=H)) == ["properties.count"]
    customer = {"customer_id": "c1", "customer": {"n": -(2**63) - 1}}
    assert paths(h.client.post("/customers", json=customer, headers=H)) == ["customer.n"]
    fits = purchase(metadata={"n": 2**63 - 1, "m": -(2**63)})
    assert h.client.post("/behavior/events", json=fits, headers=H).status_code == 202


def test_the_precheck_finds_every_escape_of_a_control_character():
    for code in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)]:
        raw = json.dumps({"a": chr(code)}).encode()
        assert suspect(raw) and problems(json.loads(raw)) == [("a", problems({"a": chr(code)})[0][1])]
    for text in ("\t\n\r", "plain", "\u00e9"):
        assert problems({"a": text}) == []
    assert not suspect(json.dumps({"a": "\t\n\r plain", "n": 10**17}).encode())


def test_floats_beyond_64_bits_are_refused_in_any_notation(h):
    headers = {**H, "Content-Type": "application/json"}
    event = b'{"customer_id": "c1", "type": "PURCHASE", "properties": {"amount": 1}, "metadata": '
    for number in (b"1e19", b"1E+19", b"-9.3e18", b"12345678901234567890.5"):
        raw = event + b'{"x": ' + number + b"}}"
        assert paths(h.client.post("/behavior/events", content=raw, headers=headers)) == ["metadata.x"], (
            number
        )
    ok = event + b'{"x": 1e18, "y": 2.5e-30}}'
    assert h.client.post("/behavior/events", content=ok, headers=headers).status_code == 202


def test_auth_comes_before_the_input_rules(h):
    customer = {"customer_id": "c1", "customer": {"name": "Ana\u0000"}}
    assert h.client.post("/customers", json=customer).status_code == 401
    program = {"name": "p\u0000"}
    assert h.client.put("/admin/program", json=program, headers=H).status_code == 403


def test_the_input_rule_dependency_takes_no_extra_rate_limit_token():
    harness = Harness(rate_limit_per_s=0.001, rate_limit_burst=2)
    with TestClient(harness.app) as client:
        codes = [
            client.post("/customers", json={"customer_id": "c1"}, headers=H).status_code for _ in range(3)
        ]
    assert codes == [202, 202, 429]
