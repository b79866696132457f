"""Quarantine: what the sink could not turn into rows is kept in `sink_rejects`, never skipped.

Three kinds of record end here, each written in the same transaction as the batch (so a
reject, like a row, lands exactly once): a record the codec cannot decode, a decoded record
the mapping cannot turn into rows, and a row PostgreSQL refuses for a data reason (a
constraint, a type, an encoding such as NUL in text). Connection-level faults are not data
reasons: those roll the batch back and the sink retries it.

Each row also keeps the record's original Kafka key and value bytes: `sink_rejects` is the
outbox of the `sink.dlq` topic, which sinks/dlq_relay.py fills from it in `id` order.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from sinks.mapping import Source

# SQLSTATE classes that blame the data, not the server: 21 cardinality violation,
# 22 data exception (types, ranges, encodings), 23 integrity constraint violation.
DATA_SQLSTATE_CLASSES = frozenset({"21", "22", "23"})
MAX_ERROR_CHARS = 2000


def is_data_error(exc: BaseException) -> bool:
    """True when retrying cannot help because the rows themselves are refused."""
    if isinstance(exc, psycopg.Error):
        if exc.sqlstate is None:  # raised by psycopg itself while adapting a Python value
            return isinstance(exc, psycopg.DataError | psycopg.ProgrammingError)
        return exc.sqlstate[:2] in DATA_SQLSTATE_CLASSES
    return isinstance(exc, TypeError | ValueError | OverflowError)


Original = tuple[bytes | None, bytes | None]  # the Kafka key and value bytes


@dataclass(frozen=True, slots=True)
class Reject:
    """One quarantined record (or one refused row of it: `table` names the target table)."""

    topic: str  # physical topic
    partition: int
    offset: int
    table: str  # "" when the record never became rows
    error: str
    record: str | None  # JSON text
    original: Original | None = None  # None: the bytes are not known

    @classmethod
    def refused(cls, topic: str, partition: int, offset: int, table: str, value: Any,
                exc: BaseException, original: Original | None = None) -> Reject:  # fmt: skip
        return cls(topic, partition, offset, table, describe(exc), to_json(value), original)

    @classmethod
    def unmappable(cls, topic: str, src: Source, value: Any, exc: BaseException) -> Reject:
        return cls(topic, src.partition, src.offset, "", "unmappable: " + describe(exc),
                   to_json(value), src.original)  # fmt: skip

    @classmethod
    def undecodable(cls, topic: str, src: Source, key: bytes | None, value: bytes | None,
                    exc: BaseException) -> Reject:  # fmt: skip
        raw = {"key_base64": _b64(key), "value_base64": _b64(value)}
        return cls(topic, src.partition, src.offset, "", "undecodable: " + describe(exc),
                   to_json(raw), (key, value))  # fmt: skip

    @property
    def reason(self) -> str:
        """`undecodable`, `unmappable` or `refused` (a row PostgreSQL refused)."""
        return split_error(self.table, self.error)[0]

    def params(self, config_version: int = -1) -> tuple:
        key, value = self.original or (None, None)
        return (self.topic, self.partition, self.offset, self.table, self.error, self.record,
                key, value, self.original is not None, config_version)  # fmt: skip


def describe(exc: BaseException) -> str:
    """The error class and message, safe to store in a text column (no NUL)."""
    sqlstate = getattr(exc, "sqlstate", None)
    head = f"{type(exc).__name__}" + (f" [{sqlstate}]" if sqlstate else "")
    text = f"{head}: {exc}".replace("\x00", "\\u0000")
    return text[:MAX_ERROR_CHARS]


REASONS = ("undecodable", "unmappable")


def split_error(table: str, error: str) -> tuple[str, str, str]:
    """(reason, error class, message) of a stored reject, read back from the `error` text that
    `describe` (behind an `undecodable: ` or `unmappable: ` prefix) wrote."""
    reason = "refused"
    for prefix in REASONS:
        if not table and error.startswith(prefix + ": "):
            reason, error = prefix, error[len(prefix) + 2 :]
            break
    head, sep, message = error.partition(": ")
    if not sep:
        return reason, "", error
    error_class, _, sqlstate = head.partition(" ")
    return reason, error_class, f"{sqlstate} {message}" if sqlstate else message


def to_json(value: Any) -> str | None:
    """JSON text of a decoded record whatever it holds (bytes, huge ints, NaN): the reject
    must store even the record that broke the row. NUL stays as the escape `\\u0000`, which
    PostgreSQL's `json` type (unlike `jsonb` and `text`) accepts."""
    if value is None:
        return None
    return orjson.dumps(_jsonable(value)).decode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": _b64(bytes(value))}
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return repr(value)


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode()


INSERT = (
    'INSERT INTO sink_rejects (topic, partition, "offset", "table", error, record, key, value, '
    "bytes_kept, config_version) VALUES (%s, %s, %s, %s, %s, %s::json, %s, %s, %s, %s) "
    "ON CONFLICT DO NOTHING"
)
# Held from the rejects' insert to the commit: their ids are drawn and committed in order, so
# the relay (which publishes `id > last`) never passes a row that a slower writer commits later.
ID_ORDER_LOCK = 0x53_4E_4B_52  # "SNKR"


def write_rejects(conn: psycopg.Connection, rejects: list[Reject], config_version: int = -1) -> None:
    """Store `rejects` inside the caller's transaction; a record the `json` type still refuses
    is kept with its error and without its body rather than failing the batch."""
    if not rejects:
        return
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (ID_ORDER_LOCK,))
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(INSERT, [r.params(config_version) for r in rejects])
    except psycopg.Error as exc:
        if not is_data_error(exc):
            raise
        with conn.cursor() as cur:
            note = f"; record not storable: {describe(exc)}"
            cur.executemany(
                INSERT,
                [(*p[:4], p[4] + note, None, *p[6:])
                 for p in (r.params(config_version) for r in rejects)],
            )  # fmt: skip
