"""Avro binary writers and readers generated per schema: fastavro's bytes, without its interpretation.

fastavro's `schemaless_writer`/`schemaless_reader` walk the schema for every record (a dispatch on
the type name per field). `compile_schema` walks it once and generates the Python source of a
straight-line writer and reader for one record schema, compiled with `compile()`.

The contract is byte-for-byte parity with fastavro (the Cython `_write`/`_read` it ships):

- The generated writer only takes the fast path for the Python types the schemas are meant for
  (exact `int` for int/long, `dict` for records and maps, `list` for arrays, `None`/`str`/... in
  unions, chosen exactly as fastavro's union validation would). Anything else raises inside the
  writer, and the caller (`Codec.encode`) re-encodes that record with fastavro, which then either
  writes its own bytes (e.g. it truncates `1.5` given to a long) or raises its own error. So odd
  values never get bytes of their own: they get fastavro's bytes or fastavro's error.
- Where fastavro itself converts (`float()` of a field typed "double"/"float", the truthiness of a
  boolean, a field's default or `None` when it is absent, `.encode()` of a string), the generated
  code does the same operation.
- The reader decodes data whose writer schema is the reader schema (no resolution); on any
  problem (truncated data, bad UTF-8, bad union index) it raises and the caller asks fastavro.

Schemas with a construct not handled here (logical types, unions the type dispatch cannot decide
exactly such as two records or a map and a record) make `compile_schema` return None: such a schema
stays entirely with fastavro.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from fastavro import parse_schema

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
LONG_MIN = -(1 << 63)
LONG_MAX = (1 << 63) - 1
_SMALL = 4096  # lengths (and zigzagged values) below this come from a table


class Unsupported(Exception):
    """The schema uses something this generator does not compile; use fastavro for it."""


class Fallback(Exception):  # noqa: N818 - a signal, not an error the caller sees
    """Raised by generated code for a value outside its fast path: encode/decode with fastavro."""


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


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint at `pos`: (value, position after it)."""
    b = data[pos]
    pos += 1
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise Fallback("varint too long")
    return (n >> 1) ^ -(n & 1), pos


def _fail(*_: Any) -> None:
    raise Fallback


def _check_len(data: bytes, pos: int) -> None:
    if pos > len(data):
        raise Fallback("truncated")


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
    "_pack_d": struct.Struct("<d").pack,
    "_pack_f": struct.Struct("<f").pack,
    "_unpack_d": struct.Struct("<d").unpack_from,
    "_unpack_f": struct.Struct("<f").unpack_from,
    "_LMIN": LONG_MIN,
    "_LMAX": LONG_MAX,
    "_IMIN": -(1 << 31),
    "_IMAX": (1 << 31) - 1,
    "_T": b"\x01",
    "_F": b"\x00",
    "_check_len": _check_len,
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
    write: Callable[[dict], bytes]  # the Avro body of a record
    write_into: Callable[[bytearray, dict], None]  # append the body to a buffer
    read: Callable[[bytes, int], dict]  # decode the body starting at `pos`
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
            if ftype == "float" or ftype == "double":
                out.append(f"    {v} = float({v})")
            self.write_value(ftype, v, out, "    ")

    def write_string(self, v: str, out: list[str], ind: str) -> None:
        """As fastavro's write_utf8: `.encode()` (UTF-8), its length, the bytes."""
        b, n = self.var("b"), self.var("n")
        out.append(f"{ind}{b} = {v}.encode()")
        out.append(f"{ind}{n} = len({b})")
        out.append(f"{ind}out += _LEN[{n}] if {n} < _SMALL else _varint({n} << 1)")
        out.append(f"{ind}out += {b}")

    def write_value(self, schema: Any, v: str, out: list[str], ind: str, checked: bool = False) -> None:
        """Append `v` as `schema`; `checked`: the union dispatch already checked an int's range."""
        schema = self.resolve(schema)
        kind = self.kind(schema)
        if kind == "null":
            return  # fastavro writes nothing, whatever the value
        if kind == "boolean":
            out.append(f"{ind}out += _T if {v} else _F")
        elif kind in ("int", "long"):
            # fastavro's Cython writer converts both to a C long long: no 32-bit check for int.
            if not checked:
                out.append(f"{ind}if {v}.__class__ is not int or not _LMIN <= {v} <= _LMAX:")
                out.append(f"{ind}    raise Fallback")
            out.append(f"{ind}{v} = ({v} << 1) ^ ({v} >> 63)")
            out.append(f"{ind}out += _U[{v}] if {v} < _SMALL2 else _varint({v})")
        elif kind == "double":
            out.append(f"{ind}out += _pack_d({v})")
        elif kind == "float":
            out.append(f"{ind}out += _pack_f({v})")
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
        only unions where that is decidable statically are compiled; the validation of a complex
        branch (array/map/record) is delegated to fastavro's own validator."""
        from fastavro.validation import _validate

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
            elif k in ("array", "map", "record", "error"):
                check = self.const(
                    lambda datum, s=branch, n=self.named: _validate(
                        datum, s, n, raise_errors=False, field="", options={}
                    ),
                    "_valid",
                )
                cond += f" and {check}({v})"
            out.append(f"{ind}{'if' if first else 'elif'} {cond}:")
            out.append(f"{ind}    out += {self.const(_varint(index << 1), '_u')}")
            if cls == "int" and k == "double":
                out.append(f"{ind}    out += _pack_d({v})")
            else:
                self.write_value(branch, v, out, ind + "    ", checked=k in ("int", "long"))
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

    def read_long(self, v: str, out: list[str], ind: str) -> None:
        out.append(f"{ind}{v} = data[pos]")
        out.append(f"{ind}if {v} < 0x80:")
        out.append(f"{ind}    pos += 1")
        out.append(f"{ind}    {v} = ({v} >> 1) ^ -({v} & 1)")
        out.append(f"{ind}else:")
        out.append(f"{ind}    {v}, pos = _read_long(data, pos)")

    def read_length(self, n: str, out: list[str], ind: str) -> None:
        """A length: a long that must not be negative (one even byte when below 64)."""
        out.append(f"{ind}{n} = data[pos]")
        out.append(f"{ind}if {n} < 0x80 and not {n} & 1:")
        out.append(f"{ind}    pos += 1")
        out.append(f"{ind}    {n} >>= 1")
        out.append(f"{ind}else:")
        out.append(f"{ind}    {n}, pos = _read_long(data, pos)")
        out.append(f"{ind}    if {n} < 0:")
        out.append(f"{ind}        raise Fallback")

    def read_value(self, schema: Any, v: str, out: list[str], ind: str) -> None:
        schema = self.resolve(schema)
        kind = self.kind(schema)
        if kind == "null":
            out.append(f"{ind}{v} = None")
        elif kind == "boolean":
            out.append(f"{ind}{v} = data[pos] != 0")
            out.append(f"{ind}pos += 1")
        elif kind in ("int", "long"):
            self.read_long(v, out, ind)
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
            i = self.var("n")
            self.read_long(i, out, ind)
            out.append(f"{ind}if {i} < 0:")
            out.append(f"{ind}    raise Fallback")
            out.append(f"{ind}{v} = {self.const(tuple(schema['symbols']), '_sym')}[{i}]")
        elif kind in ("array", "map"):
            count, item, key = self.var("n"), self.var("i"), self.var("k")
            out.append(f"{ind}{v} = {'[]' if kind == 'array' else '{}'}")
            self.read_long(count, out, ind)
            out.append(f"{ind}while {count}:")
            out.append(f"{ind}    if {count} < 0:")  # a block with its byte size
            out.append(f"{ind}        {count} = -{count}")
            out.append(f"{ind}        _, pos = _read_long(data, pos)")
            out.append(f"{ind}    for _ in range({count}):")
            if kind == "array":
                self.read_value(schema["items"], item, out, ind + "        ")
                out.append(f"{ind}        {v}.append({item})")
            else:
                self.read_value("string", key, out, ind + "        ")
                self.read_value(schema["values"], item, out, ind + "        ")
                out.append(f"{ind}        {v}[{key}] = {item}")
            self.read_long(count, out, ind + "    ")
        elif kind in ("record", "error"):
            out.append(f"{ind}{v}, pos = {self.record_reader(schema)}(data, pos)")
        elif kind == "union":
            if len(schema) > 60:
                raise Unsupported("union of more than 60 branches")
            i = self.var("n")
            out.append(f"{ind}{i} = data[pos]")  # the index n < 64 is the one byte 2n
            out.append(f"{ind}pos += 1")
            for index, branch in enumerate(schema):
                out.append(f"{ind}{'if' if index == 0 else 'elif'} {i} == {2 * index}:")
                self.read_value(branch, v, out, ind + "    ")
            out.append(f"{ind}else:")
            out.append(f"{ind}    raise Fallback")
        else:
            raise Unsupported(kind)

    # -- module ---------------------------------------------------------------------------------

    def build(self, schema: dict) -> Compiled:
        top_w = self.record_writer(schema)
        top_r = self.record_reader(schema)
        out: list[str] = []
        while self.pending:
            what, s = self.pending.pop(0)
            (self.gen_record_writer if what == "w" else self.gen_record_reader)(s, out)
            out.append("")
        out += [
            "def write(datum):",
            "    out = bytearray()",
            f"    {top_w}(out, datum)",
            "    return bytes(out)",
            "",
            f"write_into = {top_w}",
            "",
            "def read(data, pos=0):",
            "    if data.__class__ is not bytes:",
            "        data = bytes(data)",
            f"    value, pos = {top_r}(data, pos)",
            "    if pos > len(data):",
            "        raise Fallback",
            "    return value",
        ]
        source = "\n".join(out) + "\n"
        ns = self.ns
        exec(compile(source, f"<avro {schema['name']}>", "exec"), ns)  # noqa: S102 - our own code
        return Compiled(ns["write"], ns["write_into"], ns["read"], source)


def compile_schema(schema: dict) -> Compiled | None:
    """Writer and reader of a record schema (JSON dict or fastavro-parsed); None if unsupported.

    The generated functions raise (usually `Fallback`) for anything off their fast path: the
    caller must then use fastavro for that record, which gives its bytes or its error."""
    parsed = schema if schema.get("__fastavro_parsed") else parse_schema(schema)
    if parsed.get("type") not in ("record", "error"):
        return None
    try:
        return _Gen(parsed.get("__named_schemas", {})).build(parsed)
    except Unsupported:
        return None
