"""The partition's record of an event (the `events` store): its first result and status.

A duplicate is answered with the first result; fulfil, cancel and reverse need what the event
applied. That is read back from the first result's detail rather than stored twice (the record
is written once per event, so its size is throughput), except what changed after the first
result (a fulfilment's accumulations, redemptions, achievement progress and badges), which is
stored beside it.

This module is also the `events` store's value codec (`dumps` / `loads`: Processor.store_codecs).
A record is kept as its head, `{"since": <ms>, "status": ...}` in JSON, `since` first so a
restore reads it off the value's start to derive the retention index (retention.derived), then
a NUL byte (JSON never holds one) and the rest of the record (about 3 KB of JSON with the
example program, most of it the first result) zstd-compressed. A record is written once per
event and read back only for a duplicate or a command on it, while a cold start reads every
one: packed, the state of 1,000,000 customers restores from 3.3 GB of changelog instead of
5.6 GB (docs/benchmarks.md). Other values (the index's) and records written before are JSON.
zstd, not the stdlib's zlib: zlib sets up its 256 KB state on every call (74 us per record in
the processor against 24 us; the same size), and a zstd context is kept per thread.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson
import zstandard

_HEAD = ("since", "status")  # what stays outside the compressed part
_CUT = b"\x00"
_CODECS = threading.local()  # a zstd context is not thread-safe: one per thread


def _codecs() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    if not hasattr(_CODECS, "pair"):
        _CODECS.pair = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()
    return _CODECS.pair


def since(record: dict[str, Any]) -> int:
    """When the record was first written (records older than retention: their first result)."""
    return record.get("since") or record["result"]["processed_at"]


def dumps(value: Any) -> bytes:
    """A value of the `events` store as bytes: an event record packed, anything else JSON."""
    if not (isinstance(value, dict) and "result" in value):
        return orjson.dumps(value)
    head = {"since": since(value), **{k: value[k] for k in _HEAD[1:] if k in value}}
    rest = orjson.dumps({k: v for k, v in value.items() if k not in _HEAD})
    return orjson.dumps(head) + _CUT + _codecs()[0].compress(rest)


def loads(raw: bytes) -> Any:
    """`dumps` undone; JSON (what the store held before packing) as it is."""
    cut = raw.find(_CUT)
    if cut < 0:
        return orjson.loads(raw)
    return {**orjson.loads(_codecs()[1].decompress(raw[cut + 1 :])), **orjson.loads(raw[:cut])}


def applied(record: dict[str, Any]) -> dict[str, Any]:
    """The record with `event`, `accumulations` and `redemptions` filled in: stored ones win
    (after a fulfilment, and in records written before they were derived)."""
    detail = orjson.loads(record["result"]["detail"])
    return {
        **record,
        "event": record.get("event") or detail["event"],
        "accumulations": record.get("accumulations", detail.get("accumulations", [])),
        "redemptions": record.get("redemptions", detail.get("redemptions", [])),
        "achievements": record.get("achievements", detail.get("achievements", [])),
        "badges": record.get("badges", detail.get("badges", [])),
    }
