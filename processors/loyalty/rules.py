"""CEL rules with JSON number semantics.

Program managers write formulas the way JSON thinks of numbers: `properties.amount * 1 +
(properties.amount > 100 ? 50 : 0)`. CEL refuses `double * int`, so every integer literal of a
rule is rewritten to a double and every int in the activation becomes a float
(processors/cel.py). Rules compile once (cached by source) and evaluate against only the
variables they use.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cel

from processors.cel import TOKENS, Shortcut, doubles, jsonish, shortcut


class RuleError(ValueError):
    """A rule that does not compile or cannot be evaluated; the message says why."""


class NotFinite(RuleError):
    """A formula gave inf or nan: the numbers it read are absurd, so the whole event is
    refused (bounds.Refused), not just this campaign."""


class Bindings:
    """The CEL variables of one evaluation moment, converted lazily into one `cel.Context`
    shared by every rule evaluated at that moment (converting Python values is what costs).
    A variable, once converted, stays as it was, so a rule gives the same value at every
    evaluation of the moment: scalar results are kept (`results`, by source), e.g. a
    campaign's condition that an achievement repeats (`properties.amount > 0`). Rules a
    shortcut decides (processors/cel.py) read the Python values (`value`) and leave them
    unconverted."""

    def __init__(self, factories: dict[str, Callable[[], Any]]) -> None:
        self.factories = factories
        self.ctx = cel.Context()
        self.values: dict[str, Any] = {}  # name -> its jsonish value, taken once
        self.added: set[str] = set()
        self.results: dict[str, Any] = {}

    def value(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            factory = self.factories.get(name)
            value = self.values[name] = jsonish(factory()) if factory else None
            return value

    def context(self, names: tuple[str, ...]) -> Any:
        for name in names:
            if name not in self.added:
                self.ctx.add_variable(name, self.value(name))
                self.added.add(name)
        return self.ctx


_VARIES = object()


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled CEL expression and the top-level variables it reads. A rule that reads no
    variable (`100`, `true`) keeps its value from compile time: no context, no execution."""

    source: str
    program: Any
    variables: tuple[str, ...]
    constant: Any = _VARIES
    shortcut: Shortcut | None = None  # decides it without CEL when certain (processors/cel.py)

    def evaluate(self, activation: dict[str, Any] | Bindings) -> Any:
        if self.constant is not _VARIES:
            return self.constant
        if not isinstance(activation, Bindings):
            return self._execute({name: activation.get(name) for name in self.variables})
        value = activation.results.get(self.source, _VARIES)
        if value is _VARIES:
            value = self.shortcut(activation.value) if self.shortcut is not None else None
            if value is None:
                value = self._execute(activation.context(self.variables))
            if value is None or isinstance(value, bool | int | float | str):  # never shared mutables
                activation.results[self.source] = value
        return value

    def _execute(self, ctx: Any) -> Any:
        try:
            return self.program.execute(ctx)
        except KeyError as exc:
            raise RuleError(f"missing field {exc.args[0]!r} in {self.source!r}") from None
        except (TypeError, RuntimeError, ValueError) as exc:
            raise RuleError(f"{self.source!r}: {exc}") from None

    def test(self, activation: dict[str, Any]) -> bool:
        """A condition: true only for a boolean true; a missing field or an error is false."""
        try:
            return self.evaluate(activation) is True
        except RuleError:
            return False

    def amount(self, activation: dict[str, Any]) -> float:
        """A formula: must give a finite number (raises RuleError with the reason otherwise)."""
        value = self.evaluate(activation)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RuleError(f"formula {self.source!r} gave {value!r}, not a number")
        if value != value or value in (float("inf"), float("-inf")):
            raise NotFinite(f"formula {self.source!r} gave {value!r}")
        return float(value)


@lru_cache(maxsize=4096)
def compile_rule(source: str) -> Rule:
    """Compile once per distinct expression (raises RuleError for a syntax error)."""
    rewritten = doubles(source)
    try:
        program = cel.compile(rewritten)
    except (ValueError, RuntimeError) as exc:
        raise RuleError(f"cannot compile {source!r}: {exc}") from None
    variables = tuple(program.variables())
    if variables:
        return Rule(source, program, variables, shortcut=shortcut(rewritten))
    rule = Rule(source, program, ())
    try:
        value = rule.evaluate({})
    except RuleError:  # e.g. `1 / 0`: fails at every evaluation, with its reason
        return rule
    scalar = value is None or isinstance(value, bool | int | float | str)  # never shared mutables
    return Rule(source, program, (), value) if scalar else rule


def validate(source: str) -> str | None:
    """The compile error of a rule, or None when it compiles."""
    try:
        compile_rule(source)
    except RuleError as exc:
        return str(exc)
    return None


_NAME = r"\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)"
Fields = dict[str, frozenset[str] | None]


def fields_of(variable: str, sources: Iterable[str]) -> Fields | None:
    """What rules read of `variable` (e.g. profile): field -> sub-fields (None: all of it),
    or None when a rule uses the variable whole. Lets callers convert only those values into
    CEL, which is what evaluation costs."""
    pattern = re.compile(rf"\b{variable}\b(?:{_NAME}(?:{_NAME}(\s*\()?)?)?")
    found: dict[str, set[str] | None] = {}
    for source in sources:
        for m in pattern.finditer(_strip_strings(source)):
            field, sub, call = m.group(1), m.group(2), m.group(3)
            if not field:
                return None
            if not sub or call or found.get(field, set()) is None:
                found[field] = None
            else:
                found.setdefault(field, set()).add(sub)  # type: ignore[union-attr]
    return {k: None if v is None else frozenset(v) for k, v in found.items()}


def reduce(value: dict[str, Any], fields: Fields | None) -> dict[str, Any]:
    """Only the fields (and sub-fields) rules read."""
    if fields is None:
        return value
    out = {}
    for name, sub in fields.items():
        if name not in value:
            continue  # stays missing: has() is false, a condition on it is false
        v = value[name]
        out[name] = {k: v[k] for k in sub if k in v} if sub and isinstance(v, dict) else v
    return out


def _strip_strings(source: str) -> str:
    return " ".join(" " if m.lastgroup == "str" else m.group(0) for m in TOKENS.finditer(source))
