"""The codec is strict both ways: bytes that are not a valid Avro record and values the schema does
not allow give a CodecError, never an out-of-range, truncated or coerced value (fastavro, which the
generated code otherwise matches, reads a 10-byte varint of 2**64 as 0 and writes 1.9 as 1)."""

from __future__ import annotations

import enum
import io
import json
import struct

import pytest
from fastavro import parse_schema, schemaless_writer

from schemas.avro_compiled import compile_schema
from schemas.codec import MAGIC, Codec, CodecError

EVENT = {"id": "e", "customer_id": "c", "type": "T", "issued_at": 1, "received_at": 2}
PROFILE = {"customer_id": "c", "updated_at": 5, "config_version": 3, "profile": "{}"}

# One field of each kind, for the reader: a field's bytes go after the others' zero values.
KINDS = {
    "type": "record",
    "name": "K",
    "fields": [
        {"name": "l", "type": "long"},
        {"name": "i", "type": "int"},
        {"name": "b", "type": "boolean"},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
        {"name": "u", "type": ["null", "long"]},
        {"name": "s", "type": "string"},
        {"name": "by", "type": "bytes"},
        {"name": "d", "type": "double"},
        {"name": "a", "type": {"type": "array", "items": "long"}},
        {"name": "m", "type": {"type": "map", "values": "long"}},
    ],
}
ZERO = {"l": b"\x00", "i": b"\x00", "b": b"\x00", "e": b"\x00", "u": b"\x00", "s": b"\x00",
        "by": b"\x00", "d": b"\x00" * 8, "a": b"\x00", "m": b"\x00"}  # fmt: skip


def body(**fields: bytes) -> bytes:
    """The K record's bytes with the given fields' encodings, the others zero."""
    return b"".join(fields.get(f["name"], ZERO[f["name"]]) for f in KINDS["fields"])


_CODEC: list[Codec] = []


def codec() -> Codec:
    if not _CODEC:
        _CODEC.append(Codec())
    return _CODEC[0]


def profile_bytes(updated_at: bytes) -> bytes:
    """A Profile message with `updated_at` given as raw varint bytes."""
    prefix = codec()._prefix["Profile"]  # noqa: SLF001 - the test builds raw messages
    return prefix + b"\x02c" + b"\x00" + b"\x00" + updated_at + b"\x06" + b"\x04{}"


# -- reading ------------------------------------------------------------------------------------

LONG_2_64 = b"\x80" * 9 + b"\x02"  # 10 bytes: 2**64 before zigzag, 2**63 after (fastavro: 0)
LONG_11_BYTES = b"\x80" * 10 + b"\x00"  # a zero in 11 bytes (fastavro: 0)


def test_a_valid_profile_decodes():
    assert codec().decode(profile_bytes(b"\x0a"), "Profile")["updated_at"] == 5
    extremes = (b"\xff" * 9 + b"\x01", b"\xfe" + b"\xff" * 8 + b"\x01")  # LONG_MIN, LONG_MAX
    assert [codec().decode(profile_bytes(v))["updated_at"] for v in extremes] == [-(1 << 63), (1 << 63) - 1]


@pytest.mark.parametrize("varint", [LONG_2_64, LONG_11_BYTES, b"\xff" * 9 + b"\x7f", b"\x81" * 20 + b"\x01"])
def test_a_long_beyond_64_bits_or_10_bytes_is_refused(varint):
    with pytest.raises(CodecError, match="long"):
        codec().decode(profile_bytes(varint), "Profile")
    with pytest.raises(CodecError, match="long"):
        codec().decode(profile_bytes(varint))


def test_a_bad_long_is_refused_when_resolving_an_old_writer(tmp_path):
    """Writer != reader goes to fastavro's resolution, which reads 2**64 as 0: checked first."""
    current = json.loads((codec_dir() / "profile.avsc").read_text())
    old = {**current, "fields": [f for f in current["fields"] if f["name"] != "anonymous"]}
    (tmp_path / "history").mkdir()
    (tmp_path / "profile.avsc").write_text(json.dumps(current))
    (tmp_path / "history" / "profile.v0.avsc").write_text(json.dumps(old))
    reader = Codec(tmp_path)
    good = Codec(tmp_path / "history").encode("Profile", PROFILE)
    assert reader.decode(good, "Profile")["anonymous"] is False
    bad = good[:10] + b"\x02c" + b"\x00" + LONG_2_64 + b"\x06" + b"\x04{}"
    with pytest.raises(CodecError, match="long"):
        reader.decode(bad, "Profile")


def codec_dir():
    from schemas.codec import AVRO_DIR

    return AVRO_DIR


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"i": b"\x80\x80\x80\x80\x10"}, "int"),  # 2**31 (fastavro: 2147483648 in an int)
        ({"i": b"\xff\xff\xff\xff\x0f"}, None),  # -2**31: valid
        ({"i": b"\x80" * 5 + b"\x00"}, "int"),  # 6 bytes
        ({"b": b"\x02"}, "boolean"),  # fastavro: True
        ({"e": b"\x01"}, "enum index -1"),  # fastavro: "B", counted from the end
        ({"e": b"\x04"}, "enum index 2"),  # fastavro: IndexError
        ({"u": b"\x04"}, "union index"),  # fastavro: IndexError
        ({"u": b"\x01"}, "union index"),  # -1
        ({"u": b"\x82\x00\x02"}, None),  # index 1 in two bytes: valid, as fastavro reads it
        ({"s": b"\x01"}, "negative length"),
        ({"s": b"\x0a" + b"ab"}, "truncated"),
        ({"s": b"\x04\xff\xfe"}, "UTF-8"),
        ({"by": b"\x03"}, "negative length"),
        ({"d": b"\x00" * 3}, "truncated"),
        ({"a": b"\x80\x80\x80\x80\x10\x02"}, "beyond the data"),  # 2**30 items in 1 byte
        ({"a": b"\x03\x01\x02\x00"}, "negative block size"),
        ({"a": b"\x03\x04\x02\x00\x00"}, None),  # a block with its byte size: valid
        ({"m": b"\xfe\xff\xff\xff\x0f"}, "beyond the data"),
        ({"l": b"\x80"}, "truncated"),
    ],
)
def test_invalid_bytes_of_each_kind_are_refused(fields, error):
    compiled = compile_schema(KINDS)
    data = body(**fields)
    if error is None:
        compiled.read(data, 0)
        return
    with pytest.raises(CodecError, match=error):
        compiled.read(data, 0)


def test_trailing_bytes_are_refused():
    data = codec().encode("Event", EVENT)
    with pytest.raises(CodecError, match="trailing"):
        codec().decode(data + b"\x00", "Event")


def test_truncated_bytes_are_a_codec_error_not_eoferror():
    data = codec().encode("Event", EVENT)
    for cut in range(10, len(data)):
        with pytest.raises(CodecError):
            codec().decode(data[:cut], "Event")


def test_a_schema_left_to_fastavro_gives_codec_errors(tmp_path):
    (tmp_path / "t.avsc").write_text(json.dumps(LOGICAL))
    local = Codec(tmp_path)
    data = local.encode("T", {"at": 1, "n": 2})
    assert local.decode(data)["n"] == 2
    with pytest.raises(CodecError):
        local.decode(data[:-1])


# -- writing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("issued_at", 1.9),  # fastavro writes 1
        ("issued_at", 3.0),  # integral, but not an int
        ("issued_at", True),
        ("issued_at", "5"),
        ("issued_at", 1 << 63),
        ("issued_at", -(1 << 63) - 1),
        ("received_at", None),
        ("reserve", 1 << 31),  # ["null", "int"]: fastavro raises ValueError, without the field
        ("reserve", 2.0),
        ("fulfilled", 1),  # fastavro: truthy is true
        ("fulfilled", "no"),  # fastavro writes true
        ("fulfilled", None),
        ("customer_id", 5),
        ("customer_id", b"c"),
        ("customer_id", "\ud800"),  # a lone surrogate (JSON "\ud800"): fastavro's UnicodeEncodeError
        ("reference", 5),
        ("tags", ["a", 1]),
        ("tags", "ab"),
        ("redeem", [{"reward_id": "r", "amount": "2.5"}]),  # fastavro float()s the string
        ("redeem", [{"reward_id": "r", "amount": 10**400}]),
        ("redeem", [{"amount": 1.0}]),
    ],
)
def test_a_value_the_schema_does_not_allow_is_refused_naming_the_field(field, value):
    record = {**EVENT, field: value}
    with pytest.raises(CodecError, match=rf"Event\.{field}\b"):
        codec().encode("Event", record)
    with pytest.raises(CodecError, match=rf"Event\.{field}\b"):
        compile_schema(codec().schema("Event")).write(record)


def test_errors_name_the_nested_field():
    record = {**EVENT, "redeem": [{"reward_id": "r", "amount": 1.0}, {"reward_id": "r", "amount": "x"}]}
    with pytest.raises(CodecError, match=r"Event\.redeem\[1\]\.amount: a number"):
        codec().encode("Event", record)
    with pytest.raises(CodecError, match=r"Event\.id: missing"):
        codec().encode("Event", {k: v for k, v in EVENT.items() if k != "id"})


def test_a_bad_wallet_value_is_refused_naming_its_field():
    line = {"id": "l", "amount": 1.0, "reward_id": "POINTS", "event_id": "e", "issued_at": 1.5,
            "kind": "ACCUMULATION"}  # fmt: skip
    wallet = {"customer_id": "c", "balance": {"POINTS": 1.0}, "points": 1.0, "lifetime": 1.0,
              "pending": 0.0, "lines": [line]}  # fmt: skip
    result = {"event_id": "e", "customer_id": "c", "type": "T", "status": "RESOLVED", "processed_at": 1}
    with pytest.raises(CodecError, match=r"Result\.wallet\.lines\[0\]\.issued_at: an int"):
        codec().encode("Result", {**result, "wallet": wallet})
    with pytest.raises(CodecError, match=r"Result\.wallet\.balance\['POINTS'\]: a number"):
        codec().encode("Result", {**result, "wallet": {**wallet, "lines": [], "balance": {"POINTS": "1"}}})
    ok = {**wallet, "lines": [{**line, "issued_at": 1}]}
    assert codec().decode(codec().encode("Result", {**result, "wallet": ok}), "Result")["wallet"]["lines"][0][
        "reason"] is None  # fmt: skip


@pytest.mark.parametrize(
    ("schema", "value"),
    [("int", (1 << 31) - 1), ("int", -(1 << 31)), ("long", (1 << 63) - 1), ("long", -(1 << 63)),
     ("boolean", True), ("boolean", False), ("double", 5), ("double", 1.5), ("float", 1e38),
     ("float", float("inf")), ("string", "ünï")],
)  # fmt: skip
def test_values_at_the_limits_are_written_as_fastavro_writes_them(schema, value):
    parsed = parse_schema({"type": "record", "name": "R", "fields": [{"name": "x", "type": schema}]})
    buf = io.BytesIO()
    schemaless_writer(buf, parsed, {"x": value})
    assert compile_schema(parsed).write({"x": value}) == buf.getvalue()


@pytest.mark.parametrize(
    ("schema", "value"),
    [("int", 1 << 31), ("int", -(1 << 31) - 1), ("int", 1.0), ("long", 1.5), ("boolean", 0),
     ("boolean", "true"), ("double", "1.5"), ("double", True), ("float", 1e39), ("string", 1),
     ("null", 0), ("bytes", "ab")],
)  # fmt: skip
def test_each_primitive_refuses_what_fastavro_would_coerce(schema, value):
    parsed = parse_schema({"type": "record", "name": "R", "fields": [{"name": "x", "type": schema}]})
    with pytest.raises(CodecError, match=r"R\.x: "):
        compile_schema(parsed).write({"x": value})


class Colour(enum.StrEnum):
    RED = "red"


class Count(enum.IntEnum):
    TWO = 2


def test_subclasses_of_int_and_str_are_written_with_fastavros_bytes():
    record = {**EVENT, "customer_id": Colour.RED, "issued_at": Count.TWO, "tags": ("a",)}
    plain = {**EVENT, "customer_id": "red", "issued_at": 2, "tags": ["a"]}
    assert codec().encode("Event", record) == codec().encode("Event", plain)


LOGICAL = {
    "type": "record",
    "name": "T",
    "fields": [
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "n", "type": "long"},
    ],
}


def test_a_schema_left_to_fastavro_is_checked_too(tmp_path):
    assert compile_schema(LOGICAL) is None
    (tmp_path / "t.avsc").write_text(json.dumps(LOGICAL))
    local = Codec(tmp_path)
    assert local.encode("T", {"at": 1, "n": 2})[:2] == MAGIC
    with pytest.raises(CodecError, match=r"T\.n: an int"):
        local.encode("T", {"at": 1, "n": 2.5})
    with pytest.raises(CodecError, match=r"T\.at: a timestamp-millis"):
        local.encode("T", {"at": "soon", "n": 2})


def test_doubles_take_ints_as_fastavro_does():
    record = {**EVENT, "redeem": [{"reward_id": "r", "amount": 3}]}
    decoded = codec().decode(codec().encode("Event", record), "Event")
    assert decoded["redeem"][0]["amount"] == 3.0 and type(decoded["redeem"][0]["amount"]) is float
    assert struct.pack("<d", 3.0) in codec().encode("Event", record)
