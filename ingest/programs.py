"""Where ingest gets the current program (event types) from, and compiled validators for it.

`ProgramSource` is the seam: production uses the runtime's global-table reader
(processors.runtime.config_table.ProgramTable); tests inject a `StaticPrograms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import jsonschema

from schemas.program import RESERVED_EVENT_TYPES, EventType, Program
from schemas.settings import Settings

DEFAULT_VALIDATOR = jsonschema.Draft202012Validator


class ProgramSource(Protocol):
    def current(self) -> Program: ...


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


@dataclass(frozen=True)
class CompiledType:
    """An event type with its JSON Schema validator compiled once per program version.

    `fast` (jsonschema_rs, when installed) answers the common valid case in about a
    microsecond; the reference `jsonschema` validator explains failures with field paths.
    """

    spec: EventType
    validator: Any
    fast: Any = None

    def errors(self, properties: dict[str, Any]) -> list[tuple[str, str]]:
        if self.fast is not None:
            try:
                if self.fast.is_valid(properties):
                    return []
            except (ValueError, TypeError, OverflowError):
                pass  # values the Rust validator cannot take: ask the reference one
        found = []
        for err in self.validator.iter_errors(properties):
            path = ".".join(["properties", *(str(p) for p in err.absolute_path)])
            found.append((path, err.message))
        return found[:20]


class TypeRegistry:
    """Caches compiled event types per program object (a new version is a new object)."""

    def __init__(self, source: ProgramSource) -> None:
        self.source = source
        self._program: Program | None = None
        self._types: dict[str, CompiledType] = {}

    def lookup(self, name: str) -> CompiledType | None:
        program = self.source.current()
        if program is not self._program:
            # Reserved types exist even in an empty program (before any config is applied).
            types = [EventType(name=n) for n in RESERVED_EVENT_TYPES] + program.event_types
            self._types = {t.name: _compile(t) for t in types}
            self._program = program
        return self._types.get(name)


def _compile(spec: EventType) -> CompiledType:
    """Compile; a schema that is itself invalid accepts everything (admin PUT rejects those)."""
    schema = spec.schema_ or {"type": "object"}
    cls = jsonschema.validators.validator_for(schema, default=DEFAULT_VALIDATOR)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError:
        schema = {}
    return CompiledType(spec, cls(schema, format_checker=cls.FORMAT_CHECKER), _fast(schema))


def _fast(schema: dict[str, Any]) -> Any:
    try:
        import jsonschema_rs
    except ImportError:
        return None
    try:
        return jsonschema_rs.validator_for(schema, validate_formats=True)
    except Exception:  # noqa: BLE001 - any schema it cannot compile: use the reference one
        return None


def schema_problems(program: Program) -> list[tuple[str, str]]:
    """Event types whose JSON Schema is not a valid schema, as (path, reason)."""
    problems = []
    for i, spec in enumerate(program.event_types):
        cls = jsonschema.validators.validator_for(spec.schema_, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(spec.schema_)
        except jsonschema.SchemaError as exc:
            problems.append((f"event_types.{i}.schema", exc.message))
    return problems
