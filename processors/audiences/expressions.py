"""CEL conditions with JSON number semantics, shared by audiences and journeys.

JSON numbers in CEL (processors/cel.py: `doubles` for the source, `jsonish` for values) make
conditions such as `profile.purchase_count > 0` or `profile.total_spend / 2 >= 250` work
whatever the JSON said.
A condition that cannot be evaluated (missing field, wrong type) is simply false.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import cel

from processors.cel import doubles, jsonish

floats = jsonish  # the name audiences and journeys use

log = logging.getLogger(__name__)


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
