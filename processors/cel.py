"""CEL with JSON number semantics, shared by the loyalty rules, audiences and journeys.

Program managers write rules the way JSON thinks of numbers (`properties.amount * 1 +
(properties.amount > 100 ? 50 : 0)`), but CEL refuses `double * int`. So every integer literal
of an expression becomes a double literal (`doubles`), except list indexes (`tags[0]`) and the
divisor of `%` (CEL has modulo on ints only: `int(profile.n) % 2 == 1`), and every int in the
activation becomes a float (`jsonish`).
"""

from __future__ import annotations

import re
from typing import Any

TOKENS = re.compile(
    r"""(?P<str>[rRbB]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'))
      |(?P<id>[A-Za-z_][A-Za-z0-9_]*)
      |(?P<num>0[xX][0-9a-fA-F]+[uU]?|\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?
               |\d+[eE][+-]?\d+|\d+[uU]?)
      |(?P<other>\S)""",
    re.VERBOSE,
)


def doubles(source: str) -> str:
    """Rewrite integer literals to doubles (`1` -> `1.0`), leaving strings, indexes and `%`
    divisors alone."""
    out: list[str] = []
    pos = 0
    prev: list[str] = []  # significant tokens so far
    tokens = list(TOKENS.finditer(source))
    for i, m in enumerate(tokens):
        out.append(source[pos : m.start()])
        text = m.group(0)
        keep = _is_index(prev, tokens, i) or (prev and prev[-1] == "%")
        if m.lastgroup == "num" and text.isdigit() and not keep:
            text += ".0"
        out.append(text)
        prev.append(m.group(0))
        pos = m.end()
    out.append(source[pos:])
    return "".join(out)


def _is_index(prev: list[str], tokens: list[re.Match], i: int) -> bool:
    """`x[0]`: an int literal alone between brackets that follow a value."""
    following = tokens[i + 1].group(0) if i + 1 < len(tokens) else ""
    if len(prev) < 2 or prev[-1] != "[" or following != "]":
        return False
    before = prev[-2]
    return before in ("]", ")") or (before[0].isalpha() or before[0] == "_") and before != "in"


def jsonish(value: Any) -> Any:
    """Every int (not bool) becomes a float, recursively: JSON has one number type."""
    if isinstance(value, float | str | bool) or value is None:  # the common leaves first
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: jsonish(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonish(v) for v in value]
    return value
