"""CEL conditions with JSON number semantics, shared by audiences and journeys.

CEL does not mix int and double in arithmetic, while JSON (and our profiles) do not tell them
apart. So every integer in the activation becomes a float and every integer literal in the
expression becomes a double literal (except list indexes), which makes conditions such as
`profile.purchase_count > 0` or `profile.total_spend / 2 >= 250` work whatever the JSON said.
A condition that cannot be evaluated (missing field, wrong type) is simply false.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import cel

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+[uU]?|\d+\.\d*(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]|\d+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING = re.compile(
    r"""[rRbB]{0,2}(?:'''(?:.|\n)*?'''|\"\"\"(?:.|\n)*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")"""
)


def _keep_int(source: str, pos: int) -> bool:
    """True when the number at `pos` must stay an int: a subscript like `tags[0]`, or the
    divisor of `%` (CEL has modulo on ints only: `int(profile.x) % 2 == 0`)."""
    before = source[:pos].rstrip()
    if before.endswith("%"):
        return True
    if not before.endswith("["):
        return False
    prev = before[:-1].rstrip()
    return bool(prev) and (prev[-1].isalnum() or prev[-1] in "_])")


def doubles(source: str) -> str:
    """Rewrite integer literals as double literals, leaving strings and identifiers alone."""
    out: list[str] = []
    pos = 0
    while pos < len(source):
        for pattern in (_STRING, _IDENT):
            m = pattern.match(source, pos)
            if m:
                out.append(m.group())
                pos = m.end()
                break
        else:
            m = _NUMBER.match(source, pos)
            if m:
                text = m.group()
                if text.isdigit() and not _keep_int(source, pos):
                    text += ".0"
                out.append(text)
                pos = m.end()
            else:
                out.append(source[pos])
                pos += 1
    return "".join(out)


def floats(value: Any) -> Any:
    """Deep copy of a JSON value with every int (not bool) turned into a float."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [floats(v) for v in value]
    return value


@dataclass(frozen=True)
class Condition:
    """A compiled CEL condition; `None` program means it failed to compile (never true)."""

    source: str
    program: Any | None

    def __call__(self, activation: dict[str, Any] | cel.Context) -> bool:
        """Evaluate against an activation whose numbers are already floats (a cel.Context when
        several conditions read the same activation: it is converted to CEL values once)."""
        if self.program is None:
            return False
        try:
            return self.program.execute(activation) is True
        except Exception:  # missing field, wrong type, undefined variable: not a match
            return False

    def references(self, name: str) -> bool:
        """Whether the source mentions identifier `name` (used to find time-based conditions)."""
        return re.search(rf"\b{re.escape(name)}\b", self.source) is not None


def compile_condition(source: str | None, default: bool = True) -> Condition:
    """Compile once per config version; a syntax error is logged and the condition is false."""
    text = (source or "").strip() or ("true" if default else "false")
    try:
        return Condition(text, cel.compile(doubles(text)))
    except Exception as exc:
        log.error("invalid CEL condition", extra={"condition": text, "error": str(exc)})
        return Condition(text, None)


TRUE = compile_condition("true")
