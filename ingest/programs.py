"""Where ingest gets the current program (event types) from; the compiled validators for it
are schemas/event_types.py, shared with the router and the loyalty processor.

`ProgramSource` is the seam: production uses the runtime's global-table reader
(processors.runtime.config_table.ProgramTable); tests inject a `StaticPrograms`.
"""

from __future__ import annotations

from typing import Protocol

import jsonschema

from schemas.event_types import (  # noqa: F401 - re-exported: shared with the router and loyalty
    DEFAULT_VALIDATOR,
    CompiledType,
    ProgramSource,
    TypeRegistry,
)
from schemas.program import Program
from schemas.settings import Settings


class ProgramPublisher(Protocol):
    def __call__(self, program: Program) -> int: ...


class StaticPrograms:
    """A fixed, swappable program (tests, and a fallback before any config is applied)."""

    def __init__(self, program: Program | None = None) -> None:
        self.program = program or Program()

    def current(self) -> Program:
        return self.program

    def publish(self, program: Program) -> int:
        self.program = program.model_copy(update={"version": self.program.version + 1})
        return self.program.version


def table_source(settings: Settings) -> ProgramSource:
    """The program.config global table, read in full and hot-swapped by the runtime."""
    from processors.runtime.config_table import ProgramTable

    table = ProgramTable(settings)
    start = getattr(table, "start", None)
    if callable(start):
        start()
    return table


def table_publisher(settings: Settings) -> ProgramPublisher:
    from processors.runtime.config_table import publish_program

    return lambda program: publish_program(settings, program)


def schema_problems(program: Program) -> list[tuple[str, str]]:
    """Event types whose JSON Schema is not a valid schema, as (path, reason)."""
    problems = []
    for i, spec in enumerate(program.event_types):
        cls = jsonschema.validators.validator_for(spec.schema_, default=DEFAULT_VALIDATOR)
        try:
            cls.check_schema(spec.schema_)
        except jsonschema.SchemaError as exc:
            problems.append((f"event_types.{i}.schema", exc.message))
    return problems
