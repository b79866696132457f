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


# -- shortcuts: the commonest conditions, decided without CEL when the answer is certain ------
# Converting a Python value into CEL costs microseconds per map entry, far more than the rule
# itself; most conditions compare one field with a literal. `shortcut` compiles such a rule
# (`properties.amount > 0.0`, `profile.tier == "gold"`, `has(properties.stars) && ...`)
# into a Python function over the activation's (jsonish) values that answers only when CEL's
# answer is certain: the field is there and has the literal's type. Otherwise it gives None and
# the caller asks CEL, which also gives the error message.

_SHORT = re.compile(
    r"""\s*(?:(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<num>\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
      |(?P<str>"[^"\\\n]*"|'[^'\\\n]*')|(?P<op>&&|\|\||[<>!=]=|[<>.()]))""",
    re.VERBOSE,
)
_COMPARE = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_MISSING = object()
Lookup = Callable[[str], Any]
Shortcut = Callable[[Lookup], "bool | None"]


def shortcut(source: str) -> Shortcut | None:
    """A Python function deciding the (doubles-rewritten) rule `source` when it is certain, or
    None when the rule is not of the simple forms: terms joined by one of `&&` / `||`, each
    `var.f[.g] OP literal` (a double literal with any comparison, a plain string one with
    `==` / `!=`) or `has(var.f[.g])`."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(source):
        m = _SHORT.match(source, pos)
        if m is None or m.end() == pos:
            if source[pos:].strip():
                return None
            break
        tokens.append((m.lastgroup or "", m.group(m.lastgroup or 0)))
        pos = m.end()
    joiners = {t for kind, t in tokens if t in ("&&", "||")}
    if len(joiners) > 1:
        return None
    terms: list[list[tuple[str, str]]] = [[]]
    for token in tokens:
        if token[1] in joiners:
            terms.append([])
        else:
            terms[-1].append(token)
    parts = [_term(t) for t in terms]
    if any(p is None for p in parts):
        return None
    if len(parts) == 1:
        return parts[0]
    every = joiners == {"&&"}

    def joined(lookup: Lookup) -> bool | None:
        answers = [p(lookup) for p in parts]  # type: ignore[misc]
        if None in answers:
            return None  # CEL's && / || absorb an error only in ways not worth copying here
        return all(answers) if every else any(answers)

    return joined


def _term(tokens: list[tuple[str, str]]) -> Shortcut | None:
    if len(tokens) >= 3 and tokens[0] == ("id", "has") and tokens[1][1] == "(" and tokens[-1][1] == ")":
        path = _path(tokens[2:-1])
        return None if path is None else _has(path)
    for i, (kind, text) in enumerate(tokens):
        if kind == "op" and text in _COMPARE:
            path, rest = _path(tokens[:i]), tokens[i + 1 :]
            if path is None or len(rest) != 1:
                return None
            lit_kind, lit = rest[0]
            if lit_kind == "num":
                return _compare(path, text, float(lit), float)
            if lit_kind == "str" and text in ("==", "!="):
                return _compare(path, text, lit[1:-1], str)
            return None
    return None


def _path(tokens: list[tuple[str, str]]) -> tuple[str, ...] | None:
    """`var.f` or `var.f.g`: the names, else None."""
    names = [t for kind, t in tokens[0::2] if kind == "id"]
    dots = [t for _, t in tokens[1::2]]
    if len(tokens) not in (3, 5) or len(names) != len(tokens) // 2 + 1 or set(dots) != {"."}:
        return None
    return None if names[0] == "has" else tuple(names)


def _field(lookup: Lookup, path: tuple[str, ...]) -> Any:
    """The value at `path`, or _MISSING when a step is not a map or lacks the key."""
    value = lookup(path[0])
    for name in path[1:]:
        if type(value) is not dict or name not in value:
            return _MISSING
        value = value[name]
    return value


def _compare(path: tuple[str, ...], op: str, literal: Any, kind: type) -> Shortcut:
    test = _COMPARE[op]

    def compare(lookup: Lookup) -> bool | None:
        value = _field(lookup, path)
        if type(value) is not kind or value != value:  # bool is not float; NaN: ask CEL
            return None
        return test(value, literal)

    return compare


def _has(path: tuple[str, ...]) -> Shortcut:
    def has(lookup: Lookup) -> bool | None:
        parent = _field(lookup, path[:-1])
        return path[-1] in parent if type(parent) is dict else None

    return has
