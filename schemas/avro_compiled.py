"""Avro binary writers and readers generated per schema: fastavro's bytes, without its interpretation.

fastavro's `schemaless_writer`/`schemaless_reader` walk the schema for every record (a dispatch on
the type name per field). `compile_schema` walks it once and generates the Python source of a
straight-line writer and reader for one record schema, compiled with `compile()`.

Writing: byte-for-byte parity with fastavro for every value it is given, and stricter than
fastavro about what a value may be (fastavro truncates `1.9` given to a long, takes any truthy
value as `true`, writes 2**40 into an int and `float()`s a string given to a double):

- The generated writer only takes the fast path for the exact Python types the schemas are meant
  for (`int` in range for int/long, `True`/`False`, `float` or `int` for float/double, `str`,
  `bytes`, `list`, `dict`, unions dispatched by exact class as fastavro's union validation would
  choose). Anything else raises `Fallback` inside the writer and the record goes to
  `strict_write`: `check` refuses a value the schema does not allow with a `CodecError` naming the
  field (`Event.redeem[0].amount: ...`), and fastavro writes what `check` lets through (an
  `IntEnum`, a `str` subclass, a tuple for an array, ...). So no value is ever truncated or
  coerced, and the bytes are always fastavro's.

Reading: the generated reader decodes data whose writer schema is the reader schema (no
resolution) and refuses, with a `CodecError`, anything that is not valid Avro where fastavro would
hand back garbage: a long in more than 10 bytes or beyond 64 bits (fastavro wraps 2**64 to 0), an
int in more than 5 bytes or beyond 32 bits, a boolean byte other than 0/1, a negative enum index
(fastavro counts it from the end), an out-of-range enum or union index, a negative length, a block
count beyond the data, bad UTF-8, truncated data and trailing bytes. Valid data gives fastavro's
value.

Schemas with a construct not handled here (logical types, unions the type dispatch cannot decide
exactly such as two records or a map and a record) make `compile_schema` return None: such a schema
stays entirely with fastavro (still through `strict_write` when encoding).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from fastavro import parse_schema, schemaless_writer
from fastavro.validation import _validate

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
LONG_MIN = -(1 << 63)
LONG_MAX = (1 << 63) - 1
INT_MIN = -(1 << 31)
INT_MAX = (1 << 31) - 1
_SMALL = 4096  # lengths (and zigzagged values) below this come from a table


class CodecError(ValueError):
    """Bytes that are not a valid Avro record of a known schema, or a value its schema refuses."""


class Unsupported(Exception):
    """The schema uses something this generator does not compile; use fastavro for it."""


class Fallback(Exception):  # noqa: N818 - a signal, not an error the caller sees
    """Raised by a generated writer for a value off its fast path: `strict_write` takes the record."""


def _varint(n: int) -> bytes:
    """Unsigned varint (n >= 0, already zigzagged)."""
    if n < 0x80:
        return _BYTE[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_BYTE = [bytes((i,)) for i in range(128)]
_U = [_varint(i) for i in range(2 * _SMALL)]  # _U[n]: the unsigned varint n
_LEN = _U[::2]  # _LEN[n]: the long n >= 0 (zigzag 2n), e.g. a string's length


def _length(n: int) -> bytes:
    return _LEN[n] if n < _SMALL else _varint(n << 1)


def _varint_reader(name: str, size: int, last_max: int, what: str) -> Callable[[bytes, int], tuple]:
    """An unrolled zigzag varint reader: (value, position after it), or CodecError beyond `size`
    bytes or when the last byte carries bits above the type's width (Avro long: 10 bytes, the 10th
    0 or 1; int: 5 bytes, the 5th below 16). Unrolled: about 20% faster than a loop."""
    lines = [f"def {name}(data, pos):", "    b = data[pos]", "    n = b & 0x7F"]
    for k in range(1, size):
        lines += [
            "    if b < 0x80:",
            f"        return (n >> 1) ^ -(n & 1), pos + {k}",
            f"    b = data[pos + {k}]",
            f"    n |= (b & 0x7F) << {7 * k}",
        ]
    lines += [
        f"    if b < {last_max}:",
        f"        return (n >> 1) ^ -(n & 1), pos + {size}",
        f"    raise CodecError({what + ' longer than ' + str(size) + ' bytes or out of range'!r})",
    ]
    ns: dict[str, Any] = {"CodecError": CodecError}
    exec(compile("\n".join(lines), f"<avro {name}>", "exec"), ns)  # noqa: S102 - our own code
    return ns[name]


_read_long = _varint_reader("_read_long", 10, 2, "long varint")
_read_int = _varint_reader("_read_int", 5, 16, "int varint")


def _read_index(data: bytes, pos: int) -> tuple[int, int]:
    """A union index written in more than one byte, as the generated code compares it: 2 * index
    (the one-byte encoding), -1 when negative."""
    n, pos = _read_int(data, pos)
    return (n << 1 if n >= 0 else -1), pos


def _block(data: bytes, pos: int, count: int) -> tuple[int, int]:
    """An array/map block header off the fast path: a negative count (followed by the block's byte
    size, which must not be negative), or a count of items that cannot fit in the data left."""
    if count < 0:
        count = -count
        size, pos = _read_long(data, pos)
        if size < 0:
            raise CodecError("negative block size")
    if count > len(data) - pos:
        raise CodecError(f"block of {count} items beyond the data")
    return count, pos


def _to_double(v: Any) -> float:
    """A double/float field's value off the `float` fast path: an exact int (fastavro float()s it)."""
    if v.__class__ is int:
        return float(v)  # OverflowError beyond a double: the strict path names the field
    raise Fallback


def _fail(*_: Any) -> None:
    raise Fallback


_BASE_NS: dict[str, Any] = {
    "Fallback": Fallback,
    "_fail": _fail,
    "_varint": _varint,
    "_LEN": _LEN,
    "_U": _U,
    "_SMALL2": 2 * _SMALL,
    "_SMALL": _SMALL,
    "_length": _length,
    "_read_long": _read_long,
    "_read_int": _read_int,
    "_read_index": _read_index,
    "_block": _block,
    "_to_double": _to_double,
    "_enc": str.encode,  # str.encode(v): TypeError unless v is a str (fastavro: v.encode())
    "CodecError": CodecError,
    "_struct_error": struct.error,
    "_pack_d": struct.Struct("<d").pack,
    "_pack_f": struct.Struct("<f").pack,
    "_unpack_d": struct.Struct("<d").unpack_from,
    "_unpack_f": struct.Struct("<f").unpack_from,
    "_LMIN": LONG_MIN,
    "_LMAX": LONG_MAX,
    "_IMIN": INT_MIN,
    "_IMAX": INT_MAX,
    "_T": b"\x01",
    "_F": b"\x00",
    "float": float,
    "len": len,
    "list": list,
    "dict": dict,
    "int": int,
    "str": str,
    "bytes": bytes,
    "range": range,
}


class Compiled(NamedTuple):
    write: Callable[[dict], bytes]  # the Avro body of a record; CodecError for a refused value
    write_into: Callable[[bytearray, dict], None]  # append the body; raises off the fast path...
    slow: Callable[[dict], bytes]  # ...where this (`strict_write`) gives the body or a CodecError
    read: Callable[[bytes, int], dict]  # decode the body from `pos` to the end; else CodecError
    source: str  # the generated module, for debugging


class _Gen:
    def __init__(self, named: dict[str, dict]) -> None:
        self.named = named
        self.ns: dict[str, Any] = dict(_BASE_NS)
        self.lines: list[str] = []
        self.counter = 0
        self.writer_fn: dict[str, str] = {}  # record fullname -> generated function name
        self.reader_fn: dict[str, str] = {}
        self.pending: list[tuple[str, dict]] = []

    def var(self, prefix: str = "v") -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def const(self, value: Any, prefix: str = "_c") -> str:
        name = self.var(prefix)
        self.ns[name] = value
        return name

    # -- schema helpers -----------------------------------------------------------------------

    def resolve(self, schema: Any) -> Any:
        """A type name or a {"type": primitive} dict -> the primitive name or the definition."""
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                return schema
            if schema in self.named:
                return self.named[schema]
            raise Unsupported(f"unknown type {schema!r}")
        if isinstance(schema, list):
            return schema
        if isinstance(schema, dict):
            if "logicalType" in schema:
                raise Unsupported("logical types")
            kind = schema.get("type")
            if kind in PRIMITIVES:
                return kind
            if kind in ("record", "enum", "fixed", "array", "map"):
                return schema
            if isinstance(kind, (str, list, dict)):
                return self.resolve(kind)
        raise Unsupported(f"type {schema!r}")

    def kind(self, schema: Any) -> str:
        schema = self.resolve(schema)
        if isinstance(schema, str):
            return schema
        if isinstance(schema, list):
            return "union"
        return schema["type"]

    # -- writer ---------------------------------------------------------------------------------

    def record_writer(self, schema: dict) -> str:
        name = schema["name"]
        if name not in self.writer_fn:
            self.writer_fn[name] = self.var("_w_")
            self.pending.append(("w", schema))
        return self.writer_fn[name]

    def gen_record_writer(self, schema: dict, out: list[str]) -> None:
        fn = self.writer_fn[schema["name"]]
        out.append(f"def {fn}(out, d):")
        out.append("    if d.__class__ is not dict:")
        out.append("        raise Fallback")
        for field in schema["fields"]:
            name, ftype = field["name"], field["type"]
            key = repr(name)
            v = self.var()
            # As fastavro's write_record: the default when absent, None when absent from a
            # nullable field without default, else its error (here: KeyError -> fastavro raises).
            if "default" in field:
                out.append(f"    {v} = d.get({key}, {self.const(field['default'], '_d')})")
            elif "null" in ftype:
                out.append(f"    {v} = d.get({key})")
            else:
                out.append(f"    {v} = d[{key}]")
            self.write_value(ftype, v, out, "    ")

    def write_string(self, v: str, out: list[str], ind: str) -> None:
        """As fastavro's write_utf8 (`.encode()`, its length, the bytes), for a str only."""
        b, n = self.var("b"), self.var("n")
        out.append(f"{ind}{b} = _enc({v})")
        out.append(f"{ind}{n} = len({b})")
        out.append(f"{ind}out += _LEN[{n}] if {n} < _SMALL else _varint({n} << 1)")
        out.append(f"{ind}out += {b}")

    def write_value(self, schema: Any, v: str, out: list[str], ind: str, checked: bool = False) -> None:
        """Append `v` as `schema`; `checked`: the union dispatch already checked a null or an int's range."""
        schema = self.resolve(schema)
        kind = self.kind(schema)
        if kind == "null":
            if not checked:  # fastavro writes nothing, whatever the value
                out.append(f"{ind}if {v} is not None:")
                out.append(f"{ind}    raise Fallback")
        elif kind == "boolean":  # only True/False (fastavro: the value's truthiness)
            out.append(f"{ind}if {v} is True:")
            out.append(f"{ind}    out += _T")
            out.append(f"{ind}elif {v} is False:")
            out.append(f"{ind}    out += _F")
            out.append(f"{ind}else:")
            out.append(f"{ind}    raise Fallback")
        elif kind in ("int", "long"):
            # an exact int in the type's range (fastavro: any int up to 64 bits, a float truncated)
            if not checked:
                lo, hi = ("_IMIN", "_IMAX") if kind == "int" else ("_LMIN", "_LMAX")
                out.append(f"{ind}if {v}.__class__ is not int or not {lo} <= {v} <= {hi}:")
                out.append(f"{ind}    raise Fallback")
            out.append(f"{ind}{v} = ({v} << 1) ^ ({v} >> 63)")
            out.append(f"{ind}out += _U[{v}] if {v} < _SMALL2 else _varint({v})")
        elif kind in ("double", "float"):
            out.append(f"{ind}if {v}.__class__ is not float:")  # an int, as fastavro float()s it
            out.append(f"{ind}    {v} = _to_double({v})")
            out.append(f"{ind}out += {'_pack_d' if kind == 'double' else '_pack_f'}({v})")
        elif kind == "string":
            self.write_string(v, out, ind)
        elif kind == "bytes":
            out.append(f"{ind}if {v}.__class__ is not bytes:")
            out.append(f"{ind}    raise Fallback")
            out.append(f"{ind}out += _length(len({v}))")
            out.append(f"{ind}out += {v}")
        elif kind == "fixed":
            out.append(f"{ind}if {v}.__class__ is not bytes or len({v}) != {int(schema['size'])}:")
            out.append(f"{ind}    raise Fallback")
            out.append(f"{ind}out += {v}")
        elif kind == "enum":
            table = {s: _varint(i << 1) for i, s in enumerate(schema["symbols"])}
            out.append(f"{ind}out += {self.const(table, '_e')}[{v}]")
        elif kind == "array":
            item = self.var("i")
            out.append(f"{ind}if {v}.__class__ is not list:")
            out.append(f"{ind}    raise Fallback")
            out.append(f"{ind}if {v}:")
            out.append(f"{ind}    out += _length(len({v}))")
            out.append(f"{ind}    for {item} in {v}:")
            self.write_value(schema["items"], item, out, ind + "        ")
            out.append(f"{ind}out += _F")
        elif kind == "map":
            key, val = self.var("k"), self.var("x")
            out.append(f"{ind}if {v}.__class__ is not dict:")
            out.append(f"{ind}    raise Fallback")
            out.append(f"{ind}if {v}:")
            out.append(f"{ind}    out += _length(len({v}))")
            out.append(f"{ind}    for {key}, {val} in {v}.items():")
            self.write_string(key, out, ind + "        ")
            self.write_value(schema["values"], val, out, ind + "        ")
            out.append(f"{ind}out += _F")
        elif kind in ("record", "error"):
            out.append(f"{ind}{self.record_writer(schema)}(out, {v})")
        elif kind == "union":
            self.write_union(schema, v, out, ind)
        else:
            raise Unsupported(kind)

    def write_union(self, branches: list, v: str, out: list[str], ind: str) -> None:
        """fastavro picks the first branch whose validation accepts the value (bar records and
        float, where it looks further). Here the branch is picked by the value's exact class, so
        only unions where that is decidable statically are compiled: one branch at most takes a
        list, one a dict. A complex branch (array/map/record) is not validated first: its writer
        is at least as strict as fastavro's validator and raises off the fast path, where the
        record goes to `strict_write` (validating the wallet of every result and notification
        with fastavro before writing it was a twentieth of the loyalty processor's CPU)."""
        kinds = [self.kind(b) for b in branches]
        if len(set(kinds)) != len(kinds) or "float" in kinds or "union" in kinds:
            raise Unsupported("union")
        if {"int", "long"} <= set(kinds) or {"record", "map"} <= set(kinds):
            raise Unsupported("union")
        # class -> first branch index taking it (fastavro: first validating branch wins)
        takes = {
            "null": ["type(None)"],
            "boolean": ["bool"],
            "int": ["int"],
            "long": ["int"],
            "double": ["float", "int"],
            "string": ["str"],
            "bytes": ["bytes"],
            "array": ["list"],
            "map": ["dict"],
            "record": ["dict"],
            "error": ["dict"],
            "enum": ["str"],
            "fixed": ["bytes"],
        }
        chosen: dict[str, int] = {}
        for index, k in enumerate(kinds):
            if k not in takes:
                raise Unsupported(f"union branch {k}")
            for cls in takes[k]:
                chosen.setdefault(cls, index)
        if chosen.get("str") is not None and {"string", "enum"} <= set(kinds):
            raise Unsupported("union of string and enum")
        if {"bytes", "fixed"} <= set(kinds):
            raise Unsupported("union of bytes and fixed")
        first = True
        for cls, index in chosen.items():
            branch, k = branches[index], kinds[index]
            if cls == "type(None)":
                cond = f"{v} is None"
            else:
                cond = f"{v}.__class__ is {cls}"
            if k == "int":
                cond += f" and _IMIN <= {v} <= _IMAX"
            elif k == "long":
                cond += f" and _LMIN <= {v} <= _LMAX"
            elif k == "enum":
                cond += f" and {v} in {self.const(frozenset(self.resolve(branch)['symbols']), '_s')}"
            elif k == "fixed":
                cond += f" and len({v}) == {int(self.resolve(branch)['size'])}"
            elif k in ("record", "error"):  # fastavro's "-type" notation names a branch itself
                cond += f" and '-type' not in {v}"
            out.append(f"{ind}{'if' if first else 'elif'} {cond}:")
            out.append(f"{ind}    out += {self.const(_varint(index << 1), '_u')}")
            if cls == "int" and k == "double":
                out.append(f"{ind}    out += _pack_d({v})")
            else:
                self.write_value(branch, v, out, ind + "    ", checked=k in ("null", "int", "long"))
            first = False
        out.append(f"{ind}else:")
        out.append(f"{ind}    raise Fallback")

    # -- reader ---------------------------------------------------------------------------------

    def record_reader(self, schema: dict) -> str:
        name = schema["name"]
        if name not in self.reader_fn:
            self.reader_fn[name] = self.var("_r_")
            self.pending.append(("r", schema))
        return self.reader_fn[name]

    def gen_record_reader(self, schema: dict, out: list[str]) -> None:
        fn = self.reader_fn[schema["name"]]
        out.append(f"def {fn}(data, pos):")
        names = []
        for field in schema["fields"]:
            v = self.var()
            self.read_value(field["type"], v, out, "    ")
            names.append(f"{field['name']!r}: {v}")
        out.append(f"    return {{{', '.join(names)}}}, pos")

    def read_long(self, v: str, out: list[str], ind: str, kind: str = "long") -> None:
        """A zigzag varint: one byte inline, longer ones checked for the type's width."""
        out.append(f"{ind}{v} = data[pos]")
        out.append(f"{ind}if {v} < 0x80:")
        out.append(f"{ind}    pos += 1")
        out.append(f"{ind}    {v} = ({v} >> 1) ^ -({v} & 1)")
        out.append(f"{ind}else:")
        out.append(f"{ind}    {v}, pos = {'_read_int' if kind == 'int' else '_read_long'}(data, pos)")

    def read_length(self, n: str, out: list[str], ind: str) -> None:
        """A length: a long that must not be negative (one even byte when below 64)."""
        out.append(f"{ind}{n} = data[pos]")
        out.append(f"{ind}if {n} < 0x80 and not {n} & 1:")
        out.append(f"{ind}    pos += 1")
        out.append(f"{ind}    {n} >>= 1")
        out.append(f"{ind}else:")
        out.append(f"{ind}    {n}, pos = _read_long(data, pos)")
        out.append(f"{ind}    if {n} < 0:")
        out.append(f"{ind}        raise CodecError('negative length')")

    def read_value(self, schema: Any, v: str, out: list[str], ind: str) -> None:
        schema = self.resolve(schema)
        kind = self.kind(schema)
        if kind == "null":
            out.append(f"{ind}{v} = None")
        elif kind == "boolean":  # the byte 0 or 1 (fastavro: any non-zero byte is true)
            out.append(f"{ind}{v} = data[pos]")
            out.append(f"{ind}pos += 1")
            out.append(f"{ind}if {v} > 1:")
            out.append(f"{ind}    raise CodecError(f'boolean byte {{{v}}}')")
            out.append(f"{ind}{v} = {v} == 1")
        elif kind in ("int", "long"):
            self.read_long(v, out, ind, kind)
        elif kind in ("double", "float"):
            size, fn = (8, "_unpack_d") if kind == "double" else (4, "_unpack_f")
            out.append(f"{ind}{v} = {fn}(data, pos)[0]")
            out.append(f"{ind}pos += {size}")
        elif kind in ("string", "bytes", "fixed"):
            n = self.var("n")
            if kind == "fixed":
                out.append(f"{ind}{n} = pos + {int(schema['size'])}")
            else:
                self.read_length(n, out, ind)
                out.append(f"{ind}{n} += pos")
            # A short slice is caught at the end: `pos` only grows, and read() checks it.
            decode = ".decode()" if kind == "string" else ""
            out.append(f"{ind}{v} = data[pos:{n}]{decode}")
            out.append(f"{ind}pos = {n}")
        elif kind == "enum":
            i, symbols = self.var("n"), tuple(schema["symbols"])
            self.read_long(i, out, ind, "int")
            out.append(f"{ind}if {i} < 0 or {i} >= {len(symbols)}:")  # fastavro: -1 is the last
            out.append(f"{ind}    raise CodecError(f'enum index {{{i}}} out of range')")
            out.append(f"{ind}{v} = {self.const(symbols, '_sym')}[{i}]")
        elif kind in ("array", "map"):
            self.read_blocks(schema, kind, v, out, ind)
        elif kind in ("record", "error"):
            out.append(f"{ind}{v}, pos = {self.record_reader(schema)}(data, pos)")
        elif kind == "union":
            self.read_union(schema, v, out, ind)
        else:
            raise Unsupported(kind)

    def read_blocks(self, schema: dict, kind: str, v: str, out: list[str], ind: str) -> None:
        """Blocks of items until a zero count. A count beyond the bytes left is refused (every
        item takes a byte at least) unless the items can be empty: then it is not bounded."""
        count, item, key = self.var("n"), self.var("i"), self.var("k")
        bounded = kind == "map" or not self.can_be_empty(schema["items"])
        out.append(f"{ind}{v} = {'[]' if kind == 'array' else '{}'}")
        self.read_long(count, out, ind)
        out.append(f"{ind}while {count}:")
        if bounded:
            out.append(f"{ind}    if {count} < 0 or {count} > len(data) - pos:")
        else:
            out.append(f"{ind}    if {count} < 0:")
        out.append(f"{ind}        {count}, pos = _block(data, pos, {count})")
        out.append(f"{ind}    for _ in range({count}):")
        if kind == "array":
            self.read_value(schema["items"], item, out, ind + "        ")
            out.append(f"{ind}        {v}.append({item})")
        else:
            self.read_value("string", key, out, ind + "        ")
            self.read_value(schema["values"], item, out, ind + "        ")
            out.append(f"{ind}        {v}[{key}] = {item}")
        self.read_long(count, out, ind + "    ")

    def read_union(self, branches: list, v: str, out: list[str], ind: str) -> None:
        """The index as its one-byte encoding 2n (or `_read_index` for a longer varint)."""
        i = self.var("n")
        out.append(f"{ind}{i} = data[pos]")
        out.append(f"{ind}if {i} < 0x80:")
        out.append(f"{ind}    pos += 1")
        out.append(f"{ind}else:")
        out.append(f"{ind}    {i}, pos = _read_index(data, pos)")
        for index, branch in enumerate(branches):
            out.append(f"{ind}{'if' if index == 0 else 'elif'} {i} == {2 * index}:")
            self.read_value(branch, v, out, ind + "    ")
        out.append(f"{ind}else:")
        out.append(f"{ind}    raise CodecError('union index out of range')")

    def can_be_empty(self, schema: Any, seen: frozenset = frozenset()) -> bool:
        """Whether a value of `schema` can take zero bytes (null, fixed(0), such records)."""
        schema = self.resolve(schema)
        kind = self.kind(schema)
        if kind == "null":
            return True
        if kind == "fixed":
            return int(schema["size"]) == 0
        if kind in ("record", "error") and schema["name"] not in seen:
            inner = seen | {schema["name"]}
            return all(self.can_be_empty(f["type"], inner) for f in schema["fields"])
        return False

    # -- module ---------------------------------------------------------------------------------

    def build(self, schema: dict) -> Compiled:
        top_w = self.record_writer(schema)
        top_r = self.record_reader(schema)
        out: list[str] = []
        while self.pending:
            what, s = self.pending.pop(0)
            (self.gen_record_writer if what == "w" else self.gen_record_reader)(s, out)
            out.append("")
        name = schema["name"]
        self.ns["_slow"] = slow = _strict_writer(schema)
        out += [
            f"write_into = {top_w}",
            "",
            "def write(datum):",
            "    out = bytearray()",
            "    try:",
            f"        {top_w}(out, datum)",
            "    except Exception:",
            "        return _slow(datum)",
            "    return bytes(out)",
            "",
            "def read(data, pos=0):",
            "    if data.__class__ is not bytes:",
            "        data = bytes(data)",
            "    try:",
            f"        value, pos = {top_r}(data, pos)",
            "    except CodecError as exc:",
            f"        raise CodecError(f'{name}: {{exc}}') from None",
            "    except (IndexError, _struct_error):",
            f"        raise CodecError('{name}: truncated') from None",
            "    except UnicodeDecodeError as exc:",
            f"        raise CodecError(f'{name}: a string is not UTF-8 ({{exc}})') from None",
            "    except Exception as exc:",
            f"        raise CodecError(f'{name}: not valid Avro data ({{exc!r}})') from exc",
            "    if pos != len(data):",
            f"        raise CodecError(f'{name}: ' + ('truncated' if pos > len(data) else 'trailing bytes'))",
            "    return value",
        ]
        source = "\n".join(out) + "\n"
        ns = self.ns
        exec(compile(source, f"<avro {schema['name']}>", "exec"), ns)  # noqa: S102 - our own code
        return Compiled(ns["write"], ns["write_into"], slow, ns["read"], source)


# -- the strict path: check a record, then let fastavro write it ------------------------------

_NUMBER_WHAT = "a number (int or float, not bool)"


def _is_int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_real(v: Any, pack: Callable[[float], bytes]) -> bool:
    """An int or float (not bool) that `pack` takes without overflow (10**400, 1e300 as float)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        pack(float(v))
    except OverflowError:
        return False
    return True


def _is_text(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        v.encode()
    except UnicodeEncodeError:  # a lone surrogate, e.g. from JSON "\ud800"
        return False
    return True


_PACK_D, _PACK_F = struct.Struct("<d").pack, struct.Struct("<f").pack
_PRIMITIVE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "null": (lambda v: v is None, "null (None)"),
    "boolean": (lambda v: v is True or v is False, "a bool (True or False)"),
    "int": (lambda v: _is_int(v, INT_MIN, INT_MAX), "an int in the 32-bit range"),
    "long": (lambda v: _is_int(v, LONG_MIN, LONG_MAX), "an int in the 64-bit range"),
    "float": (lambda v: _is_real(v, _PACK_F), f"{_NUMBER_WHAT} in float (32-bit) range"),
    "double": (lambda v: _is_real(v, _PACK_D), f"{_NUMBER_WHAT} in double range"),
    "string": (_is_text, "a str (UTF-8 encodable)"),
    "bytes": (lambda v: isinstance(v, (bytes, bytearray)), "bytes"),
}


def _refused(path: str, what: str, v: Any) -> CodecError:
    shown = repr(v)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return CodecError(f"{path}: {what} expected, got {type(v).__name__} {shown}")


class _Checker:
    """Walks a fastavro-parsed schema and a value; raises CodecError naming the first bad field."""

    def __init__(self, named: dict[str, dict]) -> None:
        self.named = named

    def value(self, schema: Any, v: Any, path: str) -> None:
        if isinstance(schema, str):
            if schema in _PRIMITIVE_CHECKS:
                ok, what = _PRIMITIVE_CHECKS[schema]
                if not ok(v):
                    raise _refused(path, what, v)
                return
            schema = self.named[schema]
        if isinstance(schema, list):
            self.union(schema, v, path)
        elif "logicalType" in schema:  # not compiled: fastavro's own validation of e.g. a datetime
            if not _validate(v, schema, self.named, raise_errors=False, field="", options={}):
                raise _refused(path, f"a {schema['logicalType']} value", v)
        elif schema["type"] in _PRIMITIVE_CHECKS:
            self.value(schema["type"], v, path)
        else:
            getattr(self, schema["type"])(schema, v, path)

    def record(self, schema: dict, v: Any, path: str) -> None:
        if not isinstance(v, Mapping):
            raise _refused(path, f"a dict (record {schema['name']})", v)
        for field in schema["fields"]:
            name, where = field["name"], f"{path}.{field['name']}"
            if name in v:
                self.value(field["type"], v[name], where)
            elif "default" in field:
                self.value(field["type"], field["default"], where)
            else:  # fastavro writes None, if the type takes it
                try:
                    self.value(field["type"], None, where)
                except CodecError:
                    raise CodecError(f"{where}: missing (the field has no default)") from None

    error = record

    def enum(self, schema: dict, v: Any, path: str) -> None:
        if not isinstance(v, str) or v not in schema["symbols"]:
            raise _refused(path, f"one of {schema['symbols']}", v)

    def fixed(self, schema: dict, v: Any, path: str) -> None:
        if not isinstance(v, (bytes, bytearray)) or len(v) != schema["size"]:
            raise _refused(path, f"{schema['size']} bytes", v)

    def array(self, schema: dict, v: Any, path: str) -> None:
        if not isinstance(v, (list, tuple)):
            raise _refused(path, "a list", v)
        for i, item in enumerate(v):
            self.value(schema["items"], item, f"{path}[{i}]")

    def map(self, schema: dict, v: Any, path: str) -> None:
        if not isinstance(v, Mapping):
            raise _refused(path, "a dict (map)", v)
        for key, item in v.items():
            if not _is_text(key):
                raise _refused(f"{path} key", "a str (UTF-8 encodable)", key)
            self.value(schema["values"], item, f"{path}[{key!r}]")

    def union(self, branches: list, v: Any, path: str) -> None:
        if v is not None and len(branches) == 2 and "null" in branches:  # an optional value:
            self.value(branches[1 - branches.index("null")], v, path)  # its error names the field
            return
        for branch in branches:
            try:
                self.value(branch, v, path)
                return
            except CodecError:
                continue
        names = [b if isinstance(b, str) else b.get("name", b["type"]) for b in branches]
        raise _refused(path, f"a value of one of {names}", v)


def check(schema: dict, record: Any) -> None:
    """Raise CodecError, naming the field, for a value the (fastavro-parsed) schema does not allow:
    an int where a bool belongs, a float or an out-of-range int where an int/long belongs, a
    non-str string, a missing field without default, ... (the values fastavro coerces)."""
    _Checker(schema.get("__named_schemas", {})).value(schema, record, schema["name"])


def strict_write(schema: dict, record: Any) -> bytes:
    """The Avro body of `record` by fastavro once `check` accepts it; else a CodecError."""
    check(schema, record)
    buf = io.BytesIO()
    try:
        schemaless_writer(buf, schema, record, disable_tuple_notation=True)
    except Exception as exc:  # noqa: BLE001 - whatever fastavro refuses is the caller's bad value
        raise CodecError(f"{schema['name']}: {exc}") from exc
    return buf.getvalue()


def _strict_writer(schema: dict) -> Callable[[Any], bytes]:
    return lambda record: strict_write(schema, record)


def compile_schema(schema: dict) -> Compiled | None:
    """Writer and reader of a record schema (JSON dict or fastavro-parsed); None if unsupported.

    `write` and `read` give the body or a CodecError. `write_into` raises for anything off its
    fast path: the caller then calls `slow` for that record (fastavro's bytes or a CodecError)."""
    parsed = schema if schema.get("__fastavro_parsed") else parse_schema(schema)
    if parsed.get("type") not in ("record", "error"):
        return None
    try:
        return _Gen(parsed.get("__named_schemas", {})).build(parsed)
    except Unsupported:
        return None
