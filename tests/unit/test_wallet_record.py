"""The wallet's own Avro record (Result and Notification v2): a topic still holding v1 records
(the wallet as JSON inside `detail` / `data`) decodes to the same in-memory shape, is sunk to the
same rows and gives receivers the same webhook bodies as the v2 records of the same events."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from processors.delivery.routing import request_body
from processors.loyalty import engine
from schemas.codec import AVRO_DIR, Codec, CodecError, decode, encode
from schemas.program import Program
from schemas.wallet import LINE_FIELDS, as_json, from_json
from sinks.mapping import Source, rows_for
from tests.unit.test_loyalty_adjust import adjust
from tests.unit.test_loyalty_engine import BASE, NOW, Shop, program

V1 = Codec(AVRO_DIR / "history")  # a producer still on the v1 schemas
FIELD = {"Result": "detail", "Notification": "data"}  # where v1 kept the wallet JSON
PROGRAM = program(
    rewards=[{"id": "POINTS", "expires_after_days": 30}, {"id": "COFFEE", "kind": "other"}],
    campaigns=[
        {**BASE, "formula": "properties.amount"},
        {"id": "mug", "condition": "properties.amount >= 50", "formula": "1", "reward_id": "COFFEE"},
    ],
)


def v1_bytes(name: str, record: dict[str, Any]) -> bytes:
    """`record` as the v1 code wrote it: the wallet's JSON inside detail (after `redemptions`)
    or data (its last key), written with the v1 schema."""
    old = {k: v for k, v in record.items() if k != "wallet"}
    wallet = as_json(record.get("wallet"))
    if wallet is not None:
        body = orjson.loads(record[FIELD[name]])
        if name == "Result":
            keys = list(body)
            at = keys.index("redemptions") + 1 if "redemptions" in keys else len(keys)
            items = list(body.items())
            body = dict(items[:at] + [("wallet", wallet)] + items[at:])
        else:
            body["wallet"] = wallet
        old[FIELD[name]] = orjson.dumps(body).decode()
    return V1.encode(name, old)


def v1_body(raw: bytes) -> bytes:
    """The webhook body v1 delivery sent for a v1 Notification: data as it was, wallet inside."""
    note = V1.decode(raw, "Notification")
    return json.dumps({"event": note["event"], "data": json.loads(note["data"])}).encode()


def scenario(tag: str = "Q7") -> list:
    """Every kind of wallet line: accumulations of two rewards, a redemption, a reservation of
    every open line cancelled (the lines put back: source_line_id), a credit and a debit
    adjustment (reason). Customer and event ids start with `tag` (integration tests rename them)."""
    shop, who = Shop(PROGRAM), f"{tag}cust"
    out = shop.send(who, id=f"{tag}e1", properties={"amount": 60})
    redeem = [{"reward_id": "POINTS", "amount": 15}]
    out += shop.send(who, id=f"{tag}e2", properties={"amount": 10}, redeem=redeem)
    reserve = [{"reward_id": "POINTS", "amount": 55}]  # all that is open: both lines closed
    out += shop.send(who, id=f"{tag}order", fulfilled=False, properties={"amount": 1}, redeem=reserve)
    cancel = {"kind": "CANCEL", "target_event_id": f"{tag}order", "payload": {}}
    out += shop.send(who, "COMMAND", id=f"{tag}cancel", **cancel)
    out += adjust(shop, who, 30, id=f"{tag}credit", reason="late delivery")
    out += adjust(shop, who, -5, id=f"{tag}debit", reason="fraud")
    return out


OUT = scenario()
RESULTS = [v for topic, _, v in OUT if topic == "loyalty.results"]
NOTES = [v for topic, _, v in OUT if topic == "notifications"]


def test_the_scenario_covers_every_optional_line_field():
    lines = [ln for r in RESULTS for ln in r["wallet"]["lines"]]
    assert any(ln["source_line_id"] for ln in lines) and any(ln["reason"] for ln in lines)
    kinds = {"CUSTOMER_ACCUMULATION", "CUSTOMER_REDEMPTION", "REWARDS_RESERVATION"}
    assert {n["event"] for n in NOTES} >= kinds | {"REWARDS_RESERVATION_CANCELLED"}


@pytest.mark.parametrize("name, records", [("Result", RESULTS), ("Notification", NOTES)])
def test_a_v1_record_decodes_to_the_same_shape_as_its_v2_record(name, records):
    for record in records:
        old, new = v1_bytes(name, record), encode(name, record)
        assert old[2:10] != new[2:10]  # two writer schemas
        assert decode(old, name) == decode(new, name) == record


def test_every_customer_accumulation_webhook_body_is_the_one_v1_sent():
    accumulations = [n for n in NOTES if n["event"] == "CUSTOMER_ACCUMULATION"]
    assert len(accumulations) >= 3
    for note in NOTES:
        old = v1_bytes("Notification", note)
        body = request_body(decode(old, "Notification"))
        assert body == request_body(decode(encode("Notification", note), "Notification")) == v1_body(old)
    sent = json.loads(request_body(accumulations[-1]))
    assert list(sent["data"]) == ["customer_id", "lines", "wallet"]  # the wallet last, as in v1
    assert sent["data"]["lines"][0]["reason"] == "late delivery"
    assert "source_line_id" not in sent["data"]["lines"][0]  # an unset optional field is absent


def test_the_sink_writes_the_same_rows_for_v1_and_v2_results():
    for res in RESULTS:
        src = Source("loyalty.results")
        old = rows_for(decode(v1_bytes("Result", res), "Result"), src)
        assert old == rows_for(decode(encode("Result", res), "Result"), src)
        names = [name for name, _ in old]
        assert names.count("wallets") == 1 and "wallet_lines" in names
        (wallet,) = [row for name, row in old if name == "wallets"]
        assert orjson.loads(wallet["wallet"]) == as_json(res["wallet"])


def test_a_wallet_of_the_first_versions_gets_the_fields_they_lacked():
    """Before the bounded wallet: no reserved, totals or sequence; every open line."""
    line = {"id": "l", "amount": 5, "reward_id": "POINTS", "campaign_id": "base", "rule": "r",
            "event_id": "e", "issued_at": 1, "expiration_date": None, "kind": "ACCUMULATION"}  # fmt: skip
    old = {"customer_id": "Q7cust", "balance": {"POINTS": 5}, "points": 5, "lifetime": 5, "pending": 0,
           "lines": [line]}  # fmt: skip
    res = {**RESULTS[0], "wallet": None, "detail": orjson.dumps({"wallet": old}).decode()}
    wallet = decode(V1.encode("Result", res), "Result")["wallet"]
    assert wallet["reserved"] == {} and wallet["totals"] == [] and wallet["sequence"] is None
    assert wallet["points"] == 5.0 and isinstance(wallet["points"], float)
    assert wallet["lines"][0]["source_line_id"] is None and as_json(wallet)["lines"] == old["lines"]


def test_a_v1_record_without_a_wallet_keeps_wallet_null():
    res = {**RESULTS[0], "wallet": None, "detail": '{"event": {}, "duplicate": false}'}
    got = decode(V1.encode("Result", res), "Result")
    assert got["wallet"] is None and got["detail"] == res["detail"]


def test_a_v1_wallet_that_is_not_one_is_a_codec_error():
    res = {**RESULTS[0], "wallet": None, "detail": '{"wallet": {"customer_id": "Q7cust", "points": "lots"}}'}
    with pytest.raises(CodecError, match="cannot upgrade loyalty.Result"):
        decode(V1.encode("Result", res), "Result")


def test_a_repeated_event_stored_before_v2_shows_its_wallet_in_the_record():
    """The events store keeps the first result; one stored by v1 code has the wallet in detail."""
    first = RESULTS[0]
    stored = V1.decode(v1_bytes("Result", first), "Result")
    prior = {"result": stored, "status": "RESOLVED", "since": NOW}
    event = {"id": first["event_id"], "customer_id": "Q7cust", "type": "PURCHASE", "reply_to": None}
    (again,) = engine.apply(None, event, Program(), NOW, lambda _id: prior).results
    assert again["wallet"] == first["wallet"] and "wallet" not in orjson.loads(again["detail"])
    assert decode(encode("Result", again), "Result")["wallet"] == first["wallet"]


def test_the_wallet_record_is_one_contract_in_both_schemas():
    def wallet_schema(path: str) -> dict:
        schema = json.loads((AVRO_DIR / path).read_text())
        (field,) = [f for f in schema["fields"] if f["name"] == "wallet"]
        return field["type"][1]

    wallet = wallet_schema("result.avsc")
    assert wallet == wallet_schema("notification.avsc") and wallet["name"] == "Wallet"
    (lines,) = [f for f in wallet["fields"] if f["name"] == "lines"]
    assert tuple(f["name"] for f in lines["type"]["items"]["fields"]) == LINE_FIELDS
    assert all(f.get("doc") or f["name"] in ("customer_id",) for f in wallet["fields"])


def test_from_json_is_the_record_of_the_json_view():
    for res in RESULTS:
        assert from_json(as_json(res["wallet"])) == res["wallet"]
