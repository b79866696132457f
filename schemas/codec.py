"""Avro single-object encoding with fastavro: no registry needed to decode.

Wire format (Avro spec, "Single object encoding"): 0xC3 0x01, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's canonical form, then the Avro body.
All timestamps are epoch milliseconds (plain `long`), so values stay JSON-friendly.
Decoders keep a fingerprint -> writer schema map (every .avsc under schemas/avro, including
schemas/avro/history/ for superseded versions) and resolve writer to reader schema.
"""

from __future__ import annotations

import io
import json
import struct
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
AVRO_DIR = Path(__file__).parent / "avro"


class CodecError(ValueError):
    """Raised for bytes that are not single-object encoded with a known schema."""


def schema_fingerprint(schema: dict) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint, little-endian, as the spec puts it on the wire."""
    canonical = to_parsing_canonical_form(parse_schema(schema, _write_hint=False))
    return struct.pack("<Q", int(fingerprint(canonical, "CRC-64-AVRO"), 16))


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


class Codec:
    """Encodes with the current schema of a record name; decodes any known writer version."""

    def __init__(self, avro_dir: Path = AVRO_DIR) -> None:
        self._current: dict[str, dict] = {}
        self._fingerprint: dict[str, bytes] = {}
        self._writers: dict[bytes, dict] = {}
        for path in sorted(avro_dir.glob("*.avsc")):
            self.register(_load(path), current=True)
        for path in sorted((avro_dir / "history").glob("*.avsc")):
            self.register(_load(path), current=False)

    def register(self, schema: dict, current: bool = True) -> None:
        """Know `schema` as a writer; `current` also makes it the one `encode` uses.

        Parsed once with fastavro's write hint, so encoding does not re-parse per record."""
        fp = schema_fingerprint(schema)
        parsed = parse_schema(schema)
        self._writers[fp] = parsed
        if current:
            name = parsed["name"].split(".")[-1]
            self._current[name] = parsed
            self._fingerprint[name] = fp

    def schema(self, name: str) -> dict:
        try:
            return self._current[name]
        except KeyError:
            raise CodecError(f"unknown schema {name!r}") from None

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        parsed = self.schema(name)
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(self._fingerprint[name])
        schemaless_writer(buf, parsed, record)
        return buf.getvalue()

    def decode(self, data: bytes, reader: str | None = None) -> dict[str, Any]:
        """Decode bytes; with `reader`, resolve the writer schema to that record's current one."""
        if len(data) < 10 or data[:2] != MAGIC:
            raise CodecError("not Avro single-object encoded (bad magic)")
        fp = bytes(data[2:10])
        writer = self._writers.get(fp)
        if writer is None:
            raise CodecError(f"unknown writer schema fingerprint {fp.hex()}")
        # Resolve only when the writer is not already the reader's current version (the common
        # case skips fastavro's resolution work).
        reader_schema = None if not reader or self._fingerprint.get(reader) == fp else self.schema(reader)
        return schemaless_reader(io.BytesIO(data[10:]), writer, reader_schema)


@cache
def default_codec() -> Codec:
    return Codec()


def encode(name: str, record: dict[str, Any]) -> bytes:
    return default_codec().encode(name, record)


def decode(data: bytes, reader: str | None = None) -> dict[str, Any]:
    return default_codec().decode(data, reader)
