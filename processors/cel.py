"""CEL with JSON number semantics, shared by the loyalty rules, audiences and journeys.

Program managers write rules the way JSON thinks of numbers (`properties.amount * 1 +
(properties.amount > 100 ? 50 : 0)`), but CEL refuses `double * int`. So every integer literal
of an expression becomes a double literal (`doubles`), except list indexes (`tags[0]`) and the
divisor of `%` (CEL has modulo on ints only: `int(profile.n) % 2 == 1`), and every int in the
activation becomes a float (`jsonish`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
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


# -- shortcuts: the commonest rules, decided without CEL when the answer is certain ----------
# Converting a Python value into CEL costs microseconds per map entry, far more than the rule
# itself, and most rules are small: `properties.amount > 0.0`, `profile.tier == "gold"`,
# `has(properties.stars) && ...`, `properties.amount * 1.0 + (properties.amount > 100.0 ? 50.0
# : 0.0)`. `shortcut` compiles such a rule into a Python function over the activation's
# (jsonish) values that answers only when CEL's answer is certain: every field it reads is there
# with the type the operation needs (a double, not NaN; a string for ==/!=). Otherwise it gives
# None and the caller asks CEL, which also gives the error message.

_SHORT = re.compile(
    r"""\s*(?:(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<num>\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
      |(?P<str>"[^"\\\n]*"|'[^'\\\n]*')|(?P<op>&&|\|\||[<>!=]=|[<>.()?:+*-]))""",
    re.VERBOSE,
)
_BINARY = {  # operator -> (binding power, function of two certain operands)
    "||": (1, lambda a, b: a or b),
    "&&": (2, lambda a, b: a and b),
    "==": (3, lambda a, b: a == b),
    "!=": (3, lambda a, b: a != b),
    "<": (3, lambda a, b: a < b),
    "<=": (3, lambda a, b: a <= b),
    ">": (3, lambda a, b: a > b),
    ">=": (3, lambda a, b: a >= b),
    "+": (4, lambda a, b: a + b),
    "-": (4, lambda a, b: a - b),
    "*": (5, lambda a, b: a * b),
}
_OPERANDS = {"||": bool, "&&": bool, "==": None, "!=": None, "+": float, "-": float, "*": float}
_MISSING = object()
Lookup = Callable[[str], Any]
Shortcut = Callable[[Lookup], Any]  # the value CEL gives, or None when not certain


class _NotShort(Exception):
    """The rule is not of the forms `shortcut` decides."""


def shortcut(source: str) -> Shortcut | None:
    """A Python function deciding the (doubles-rewritten) rule `source` when it is certain, or
    None when the rule is not made of: double and plain string literals, `var.f[.g]`,
    `has(var.f[.g])`, `&&`, `||`, comparisons, `+`, `-`, `*`, `c ? a : b` and parentheses."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while source[pos:].strip():
        m = _SHORT.match(source, pos)
        if m is None:
            return None
        tokens.append((m.lastgroup or "", m.group(m.lastgroup or 0)))
        pos = m.end()
    parser = _Parser(tokens)
    try:
        node = parser.expression(0)
        if parser.i != len(tokens):
            return None
    except _NotShort:
        return None
    return lambda lookup: _certain(node(lookup))


def _certain(value: Any) -> Any:
    return None if value is _MISSING else value


class _Parser:
    """Precedence climbing over the tokens; each node is a function lookup -> value or _MISSING."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens, self.i = tokens, 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("", "")

    def take(self, text: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if not token[0] or (text is not None and token[1] != text):
            raise _NotShort
        self.i += 1
        return token

    def expression(self, power: int) -> Shortcut:
        node = self.operand()
        while True:
            op = self.peek()[1]
            if op == "?" and power == 0:
                self.take("?")
                yes = self.expression(0)
                self.take(":")
                node = _choice(node, yes, self.expression(0))
                continue
            if op not in _BINARY or _BINARY[op][0] <= power:
                return node
            self.take()
            node = _binary(op, node, self.expression(_BINARY[op][0]))

    def operand(self) -> Shortcut:
        kind, text = self.take()
        if kind == "num":
            number = float(text)
            return lambda lookup: number
        if kind == "str":
            string = text[1:-1]
            return lambda lookup: string
        if text == "(":
            node = self.expression(0)
            self.take(")")
            return node
        if kind == "id" and text == "has":
            self.take("(")
            path = self.path(self.take()[1] if self.peek()[0] == "id" else "")
            self.take(")")
            return _has(path)
        if kind == "id":
            return _get(self.path(text))
        raise _NotShort

    def path(self, first: str) -> tuple[str, ...]:
        """`var.f` or `var.f.g` (a bare variable or a longer path: not decided here)."""
        names = [first]
        while self.peek()[1] == ".":
            self.take(".")
            kind, name = self.take()
            if kind != "id":
                raise _NotShort
            names.append(name)
        if not first or first == "has" or not 2 <= len(names) <= 3 or self.peek()[1] == "(":
            raise _NotShort  # a method call (`x.f.exists(...)`) or an odd shape
        return tuple(names)


def _field(lookup: Lookup, path: tuple[str, ...]) -> Any:
    """The value at `path`, or _MISSING when a step is not a map or lacks the key."""
    value = lookup(path[0])
    for name in path[1:]:
        if type(value) is not dict or name not in value:
            return _MISSING
        value = value[name]
    return value


def _get(path: tuple[str, ...]) -> Shortcut:
    def get(lookup: Lookup) -> Any:
        value = _field(lookup, path)
        return value if type(value) in (float, str, bool) and value == value else _MISSING

    return get


def _has(path: tuple[str, ...]) -> Shortcut:
    def has(lookup: Lookup) -> Any:
        parent = _field(lookup, path[:-1])
        return path[-1] in parent if type(parent) is dict else _MISSING

    return has


def _binary(op: str, left: Shortcut, right: Shortcut) -> Shortcut:
    fn, operands = _BINARY[op][1], _OPERANDS.get(op, "ordered")

    def binary(lookup: Lookup) -> Any:
        a = left(lookup)
        if operands is bool and a is (op == "||"):  # CEL decides on its left operand first
            return a
        b = right(lookup)
        if a is _MISSING or b is _MISSING or type(a) is not type(b):
            return _MISSING
        if operands == "ordered" and type(a) is not float:
            return _MISSING  # < <= > >= on doubles only
        if operands is float and type(a) is not float or operands is bool and type(a) is not bool:
            return _MISSING
        value = fn(a, b)
        return value if value == value else _MISSING  # NaN (inf - inf): left to CEL

    return binary


def _choice(cond: Shortcut, yes: Shortcut, no: Shortcut) -> Shortcut:
    def choice(lookup: Lookup) -> Any:
        c = cond(lookup)
        if type(c) is not bool:
            return _MISSING
        return yes(lookup) if c else no(lookup)

    return choice
