"""Input rules no JSON Schema of a program can forget: text without control characters and
numbers that fit in 64-bit signed integers, anywhere in a body; amounts up to MAX_AMOUNT.
Shared by every way in (HTTP ingest, the events.inbound router, schemas/producer.py).

PostgreSQL text cannot hold NUL, so one NUL accepted here used to stop the sink; other C0
controls (all but tab, newline, carriage return) are refused with it, as no event needs them.
Cheap on the hot path: a body is walked only when a scan of its raw bytes finds a JSON escape
that could be such a character (\\u0000-\\u001f, \\b, \\f), a run of 19+ digits or an exponent
of 10 or more. JSON cannot carry those characters unescaped (the parsers refuse raw control
bytes in strings with a 400).
"""

from __future__ import annotations

import json
import re
from typing import Any

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# The same rule as a JSON Schema pattern (published in /openapi.json for ids).
NO_CONTROL_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f]*$"
_ESCAPE = re.compile(rb"\\(?:u00[01]|[bf])")  # a literal-prefix regex: a memchr-speed scan
# Digits -> "0", everything else -> " ": a 19-digit run becomes a substring search (a digit
# regex has no literal prefix and cost 2.5 us per bulk event; this costs about 0.15 us).
# Exponents map too ("e"/"E" -> "e", "+" kept, "-" -> " "): "1e19" and "1E+300" become
# "0e00" and "0e+000", found by a search for "e00" / "e+00"; negative exponents are not.
_DIGITS = bytes(
    0x30 if 0x30 <= b <= 0x39 else 0x65 if b in (0x45, 0x65) else 0x2B if b == 0x2B else 0x20
    for b in range(256)
)
_LONG_RUN = b"0" * 19
_BIG_EXPONENTS = (b"e00", b"e+00")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT_LIMIT = 2.0**63  # a float this large is an integer too big for 64 bits
MAX_AMOUNT = 1e12  # |properties.amount| and redeem amounts; the loyalty processor bounds the same
# Marks a free-form object field for /openapi.json (ingest/inputs.py swaps it for JsonObject).
JSON_OBJECT_MARK = {"type": "object", "x-json-object": True}


def suspect(raw: bytes) -> bool:
    """True when the raw body may hold a control character or a number beyond 64 bits."""
    if _ESCAPE.search(raw) is not None:
        return True
    shape = raw.translate(_DIGITS)
    return _LONG_RUN in shape or any(exponent in shape for exponent in _BIG_EXPONENTS)


def problems(value: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, reason) for every control character in a key or string and every number out of
    the 64-bit signed range (integers, and floats of 2^63 or more), in a parsed JSON value
    (keys and values, nested)."""
    found: list[tuple[str, str]] = []
    _walk(value, path, found)
    return found[:20]


def _walk(value: Any, path: str, found: list[tuple[str, str]]) -> None:
    if isinstance(value, str):
        if CONTROL.search(value):
            found.append((path or "body", "control character (U+0000-U+001F other than tab, LF, CR)"))
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, float):
        if not -FLOAT_LIMIT < value < FLOAT_LIMIT:
            found.append((path or "body", "number outside the 64-bit signed range"))
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            found.append((path or "body", "integer outside the 64-bit signed range"))
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and CONTROL.search(key):
                found.append((where, "control character in a key"))
            _walk(item, where, found)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, f"{path}.{index}" if path else str(index), found)


def exact(raw: bytes) -> Any:
    """Parse again with the standard library, which keeps integers exact (orjson turns one over
    64 bits into a float): only on the slow path, after `suspect` said yes."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None  # the fast parser accepted it; nothing more to say


def printable(text: str) -> str:
    """`text` with each refused control character written as its escape (\\u0000): for the
    reasons and ids of a rejected event, which must still be storable text."""
    return CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
