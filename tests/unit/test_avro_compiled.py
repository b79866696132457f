"""The generated Avro writers/readers (schemas/avro_compiled.py) against fastavro: same bytes, same
values; for a value off the fast path fastavro's bytes if the strict check allows it, else a
CodecError (never other bytes); for damaged bytes fastavro's value or a CodecError."""

from __future__ import annotations

import enum
import io
import json
import math
import struct
from pathlib import Path

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.validation import validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.avro_compiled import LONG_MAX, LONG_MIN, check, compile_schema
from schemas.codec import AVRO_DIR, MAGIC, Codec, CodecError, schema_fingerprint

INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1
SCHEMA_PATHS = sorted(AVRO_DIR.glob("*.avsc")) + sorted((AVRO_DIR / "history").glob("*.avsc"))

# Every type the generator compiles, nested and by named reference, for completeness.
EVERYTHING = {
    "type": "record",
    "name": "Everything",
    "namespace": "test",
    "fields": [
        {"name": "n", "type": "null"},
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "d2", "type": {"type": "double"}},
        {"name": "s", "type": "string"},
        {"name": "by", "type": "bytes"},
        {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
        {"name": "e", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "BLUE"]}},
        {"name": "m", "type": {"type": "map", "values": ["null", "long"]}},
        {"name": "a", "type": {"type": "array", "items": {"type": "array", "items": "double"}}},
        {
            "name": "inner",
            "type": {
                "type": "record",
                "name": "Inner",
                "fields": [
                    {"name": "x", "type": "int", "default": 7},
                    {"name": "c", "type": "test.Colour"},
                    {"name": "tags", "type": {"type": "map", "values": "string"}, "default": {}},
                ],
            },
        },
        {"name": "inners", "type": {"type": "array", "items": "Inner"}, "default": []},
        {"name": "maybe_inner", "type": ["null", "Inner"], "default": None},
        {"name": "maybe_list", "type": ["null", {"type": "array", "items": "long"}], "default": None},
        {"name": "str_or_null", "type": ["string", "null"], "default": "x"},
        {"name": "num", "type": ["null", "long", "double", "string", "boolean", "bytes"], "default": None},
        {"name": "dbl_first", "type": ["double", "null", "long"], "default": 1.5},
        {"name": "fx2", "type": ["null", "Four"], "default": None},
        {"name": "en2", "type": ["null", "Colour"], "default": None},
        {"name": "mp2", "type": ["null", {"type": "map", "values": "int"}], "default": None},
    ],
}
SCHEMAS = [json.loads(p.read_text()) for p in SCHEMA_PATHS] + [EVERYTHING]
IDS = [p.name for p in SCHEMA_PATHS] + ["everything"]


def _dir_of(schema: dict) -> Path:
    """The folder a schema of SCHEMAS was read from (a superseded version: history/)."""
    return next(p.parent for p, s in zip(SCHEMA_PATHS, SCHEMAS, strict=False) if s is schema)


def fastavro_bytes(parsed: dict, datum) -> bytes:
    """fastavro's bytes, a tuple being a sequence as in the codec (not fastavro's union notation)."""
    buf = io.BytesIO()
    schemaless_writer(buf, parsed, datum, disable_tuple_notation=True)
    return buf.getvalue()


def fastavro_value(parsed: dict, data: bytes):
    return schemaless_reader(io.BytesIO(data), parsed, None)


def same(a, b) -> bool:
    """Equal, with nan equal to nan, -0.0 unlike 0.0 and True unlike 1 (repr does all three)."""
    return repr(a) == repr(b)


# -- strategies built from a parsed schema ---------------------------------------------------

DOUBLES = st.floats() | st.sampled_from(
    [-0.0, 0.0, math.inf, -math.inf, math.nan, 5e-324, 1.7976931348623157e308]
)
FLOATS = st.floats(width=32) | st.sampled_from([-0.0, math.inf, math.nan])
LONGS = st.integers(LONG_MIN, LONG_MAX) | st.sampled_from(
    [LONG_MIN, LONG_MAX, 0, -1, 63, 64, -64, -65, 8191, 8192]
)
TEXT = st.text() | st.sampled_from(["", "ünïcode €", "日本語"]) | st.builds(lambda: "🎉" * 40 + "a" * 5000)


def strategy(schema, named: dict, record_field: bool = False) -> st.SearchStrategy:
    if isinstance(schema, list):
        return st.one_of(*[strategy(s, named) for s in schema])
    if isinstance(schema, dict) and schema.get("type") in (
        "null",
        "boolean",
        "int",
        "long",
        "float",
        "double",
    ):
        schema = schema["type"]
    if isinstance(schema, dict) and schema.get("type") in ("string", "bytes"):
        schema = schema["type"]
    if isinstance(schema, str):
        simple = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(INT_MIN, INT_MAX),
            "long": LONGS,
            # fastavro float()s a value given to a field typed "double": ints are fine there.
            "float": FLOATS | st.integers(-(1 << 24), 1 << 24) if record_field else FLOATS,
            "double": DOUBLES | st.integers(-(1 << 60), 1 << 60) if record_field else DOUBLES,
            "string": TEXT,
            "bytes": st.binary(),
        }
        if schema in simple:
            return simple[schema]
        return strategy(named[schema], named)
    kind = schema["type"]
    if kind == "array":
        items = strategy(schema["items"], named)
        if not isinstance(schema["items"], str) or schema["items"] not in ("string", "long", "double"):
            return st.lists(items, max_size=4)
        return st.lists(items, max_size=5) | st.lists(items, min_size=60, max_size=150)
    if kind == "map":
        return st.dictionaries(TEXT, strategy(schema["values"], named), max_size=5)
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "record":
        required, optional = {}, {}
        for field in schema["fields"]:
            value = strategy(field["type"], named, record_field=True)
            (optional if "default" in field else required)[field["name"]] = value
        return st.fixed_dictionaries(required, optional=optional)
    raise AssertionError(f"no strategy for {schema!r}")


def parsed_and_strategy(schema: dict):
    parsed = parse_schema(schema)
    return parsed, strategy(parsed, parsed["__named_schemas"])


# -- parity on valid records ------------------------------------------------------------------


def test_every_schema_compiles():
    for schema, name in zip(SCHEMAS, IDS, strict=True):
        assert compile_schema(schema) is not None, name


@pytest.mark.parametrize("schema", SCHEMAS, ids=IDS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_records_give_fastavro_bytes_and_values(schema, data):
    parsed, records = parsed_and_strategy(schema)
    compiled = compile_schema(parsed)
    record = data.draw(records)
    expected = fastavro_bytes(parsed, record)
    assert compiled.write(record) == expected
    assert same(compiled.read(expected, 0), fastavro_value(parsed, expected))
    # at an offset, and from a memoryview, as Codec.decode reads it
    assert same(compiled.read(memoryview(b"0123" + expected), 4), fastavro_value(parsed, expected))


@pytest.mark.parametrize("path", SCHEMA_PATHS, ids=lambda p: p.name)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_codec_encode_is_unchanged_and_decodes_back(path, data):
    schema = json.loads(path.read_text())
    parsed, records = parsed_and_strategy(schema)
    record = data.draw(records)
    codec = _codec(path.parent)  # a superseded version: a producer still on it
    name = schema["name"]
    encoded = codec.encode(name, record)
    assert encoded == MAGIC + schema_fingerprint(schema) + fastavro_bytes(parsed, record)
    assert same(codec.decode(encoded, name), fastavro_value(parsed, encoded[10:]))
    assert same(codec.decode(encoded), fastavro_value(parsed, encoded[10:]))


_CODEC: dict[Path, Codec] = {}


def _codec(avro_dir: Path = AVRO_DIR) -> Codec:
    """A codec whose current schemas are those of `avro_dir` (AVRO_DIR or its history/)."""
    if avro_dir not in _CODEC:
        _CODEC[avro_dir] = Codec(avro_dir)
    return _CODEC[avro_dir]


def test_missing_fields_take_defaults_or_none_like_fastavro():
    schema = {
        "type": "record",
        "name": "M",
        "fields": [
            {"name": "a", "type": ["null", "string"]},  # no default, nullable: fastavro writes None
            {"name": "b", "type": "string", "default": "dflt"},
            {"name": "c", "type": ["string", "null"], "default": "x"},
            {"name": "d", "type": "double", "default": 0},  # an int default float()ed
            {"name": "e", "type": {"type": "array", "items": "int"}, "default": []},
        ],
    }
    parsed = parse_schema(schema)
    compiled = compile_schema(parsed)
    assert (
        compiled.write({})
        == fastavro_bytes(parsed, {})
        == b"\x00\x08dflt\x00\x02x" + struct.pack("<d", 0) + b"\x00"
    )


def test_blocks_with_byte_sizes_are_read():
    """Other writers may write array/map blocks as (-count, byte size, items)."""
    schema = {
        "type": "record",
        "name": "B",
        "fields": [
            {"name": "a", "type": {"type": "array", "items": "long"}},
            {"name": "m", "type": {"type": "map", "values": "long"}},
        ],
    }
    parsed = parse_schema(schema)
    data = b"\x05\x06\x02\x04\x06" + b"\x02\x02\x00" + b"\x01\x08\x02k\x02\x00"
    assert (
        compile_schema(parsed).read(data, 0)
        == fastavro_value(parsed, data)
        == {"a": [1, 2, 3, 1], "m": {"k": 1}}
    )


def test_logical_types_stay_with_fastavro():
    schema = {
        "type": "record",
        "name": "L",
        "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
    }
    assert compile_schema(schema) is None


def test_ambiguous_unions_stay_with_fastavro():
    schema = {
        "type": "record",
        "name": "U",
        "fields": [{"name": "u", "type": ["null", "int", "long"]}, {"name": "f", "type": ["null", "float"]}],
    }
    assert compile_schema(schema) is None


# -- values off the fast path: fastavro's bytes, or an error ----------------------------------


class Str(enum.StrEnum):
    A = "aé"


class Int(int):
    pass


class Encodes:
    def encode(self) -> bytes:
        return b"zz"


ODD = [
    None,
    True,
    False,
    0,
    -1,
    INT_MAX + 1,
    LONG_MAX,
    LONG_MAX + 1,
    LONG_MIN - 1,
    1.5,
    math.nan,
    "1.5",
    "abc",
    "\ud800",
    Str.A,
    Int(5),
    Encodes(),
    b"ab",
    bytearray(b"ab"),
    b"abcd",
    [],
    [1],
    (),
    ("string", "x"),
    {},
    {"a": 1},
    "RED",
]
ODD_VALUES = st.sampled_from(ODD) | st.recursive(
    st.sampled_from(ODD),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner),
)


def outcome(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the outcome is the point
        return exc


@pytest.mark.parametrize("schema", SCHEMAS, ids=IDS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_odd_values_get_fastavro_bytes_or_a_codec_error(schema, data):
    """What the strict check allows gets fastavro's bytes, fast path or not; the rest a CodecError.
    The check is at least as strict as fastavro's own validator, and the fast path never writes
    what the check refuses."""
    parsed, records = parsed_and_strategy(schema)
    compiled = compile_schema(parsed)
    record = dict(data.draw(records))
    field = data.draw(st.sampled_from([f["name"] for f in parsed["fields"]]))
    if data.draw(st.booleans()):
        record[field] = data.draw(ODD_VALUES)
    else:
        record.pop(field, None)
    allowed = outcome(lambda: check(parsed, record)) is None
    mine = outcome(lambda: compiled.write(record))
    if allowed:
        assert mine == fastavro_bytes(parsed, record)
    else:
        assert isinstance(mine, CodecError)
    if outcome(lambda: validate(record, parsed, raise_errors=False, disable_tuple_notation=True)) is not True:
        assert not allowed
    if outcome(lambda: compiled.write_into(bytearray(), record)) is None:
        assert allowed
    if schema is not EVERYTHING:  # and through the codec: the same outcome
        codec_out = outcome(lambda: _codec(_dir_of(schema)).encode(schema["name"], record))
        if allowed:
            assert codec_out == MAGIC + schema_fingerprint(schema) + mine
        else:
            assert isinstance(codec_out, CodecError) and str(codec_out) == str(mine)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"customer_id": "c", "type": "T", "issued_at": 1, "received_at": 2}, ValueError),  # no id
        ({"id": 1, "customer_id": "c", "type": "T", "issued_at": 1, "received_at": 2}, TypeError),
        ({"id": "e", "customer_id": "c", "type": "T", "issued_at": "1", "received_at": 2}, TypeError),
        ({"id": "e", "customer_id": "c", "type": "T", "issued_at": 1 << 63, "received_at": 2}, OverflowError),
        (
            {
                "id": "e",
                "customer_id": "c",
                "type": "T",
                "issued_at": 1,
                "received_at": 2,
                "reserve": 1 << 31,
            },
            ValueError,
        ),
        (
            {"id": "e", "customer_id": "c", "type": "T", "issued_at": 1, "received_at": 2, "reference": 5},
            ValueError,
        ),
        (
            {"id": "e", "customer_id": "c", "type": "T", "issued_at": 1, "received_at": 2, "tags": [1]},
            TypeError,
        ),
        (
            {
                "id": "e",
                "customer_id": "c",
                "type": "T",
                "issued_at": 1,
                "received_at": 2,
                "redeem": [{"amount": 1}],
            },
            ValueError,
        ),
        (
            {
                "id": "e",
                "customer_id": "c",
                "type": "T",
                "issued_at": 1,
                "received_at": 2,
                "redeem": [{"reward_id": "r", "amount": None}],
            },
            TypeError,
        ),
    ],
)
def test_invalid_events_are_codec_errors_where_fastavro_raises_its_own(value, error):
    compiled = compile_schema(_codec().schema("Event"))
    with pytest.raises(CodecError):
        compiled.write(value)
    with pytest.raises(error):
        fastavro_bytes(_codec().schema("Event"), value)
    with pytest.raises(CodecError):
        _codec().encode("Event", value)


def test_values_fastavro_coerces_are_refused_by_the_codec():
    """fastavro truncates a float given to a long, float()s a string given to a double and takes a
    truthy value as true; the codec refuses each, naming the field."""
    codec = _codec()
    base = {"id": "e", "customer_id": "c", "type": "T", "issued_at": 1, "received_at": 2}
    coerced = [("issued_at", 1.9), ("redeem", [{"reward_id": "r", "amount": "2.5"}]), ("fulfilled", 1)]
    for field, value in coerced:
        event = {**base, field: value}
        fastavro_bytes(codec.schema("Event"), event)  # fastavro writes it
        with pytest.raises(CodecError, match=field):
            codec.encode("Event", event)


# -- reading bad bytes: fastavro's value or an error -----------------------------------------


@pytest.mark.parametrize("schema", SCHEMAS, ids=IDS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_bytes_give_fastavro_value_or_an_error(schema, data):
    parsed, records = parsed_and_strategy(schema)
    compiled = compile_schema(parsed)
    good = bytearray(fastavro_bytes(parsed, data.draw(records)))
    how = data.draw(st.sampled_from(["truncate", "flip", "random"]))
    if how == "truncate":
        bad = bytes(good[: data.draw(st.integers(0, max(0, len(good) - 1)))])
    elif how == "flip" and good:
        i = data.draw(st.integers(0, len(good) - 1))
        good[i] = data.draw(st.integers(0, 255))
        bad = bytes(good)
    else:
        bad = data.draw(st.binary(max_size=64))
    mine = outcome(lambda: compiled.read(bad, 0))
    if isinstance(mine, Exception):
        assert isinstance(mine, CodecError), repr(mine)
    else:
        assert same(mine, fastavro_value(parsed, bad))


def test_codec_decodes_truncated_bytes_with_a_codec_error():
    codec = _codec()
    data = codec.encode(
        "Event", {"id": "e", "customer_id": "c", "type": "T", "issued_at": 1, "received_at": 2}
    )
    with pytest.raises(CodecError, match="truncated"):
        codec.decode(data[:-3], "Event")


def test_generated_source_is_kept_for_debugging(tmp_path: Path):
    compiled = compile_schema(EVERYTHING)
    assert "def write(datum):" in compiled.source and "def read(data, pos=0):" in compiled.source
