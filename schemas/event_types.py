"""A program's event types with their JSON Schema validators, compiled once per program version.

Shared by ingest, the events.inbound router, the loyalty processor's check and the producer
helper, so an event's properties are judged by one validator wherever it enters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import jsonschema

from schemas.program import RESERVED_EVENT_TYPES, EventType, Program

DEFAULT_VALIDATOR = jsonschema.Draft202012Validator
Types = dict[str, "CompiledType"]  # the event types of one program version, by name


class ProgramSource(Protocol):
    def current(self) -> Program: ...


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

    KEPT = 4  # programs kept compiled: a backtest alternates two (current and proposed)

    def __init__(self, source: ProgramSource | None = None) -> None:
        self.source = source
        self._program: Program | None = None
        self._types: Types = {}
        self._kept: dict[int, tuple[Program, Types]] = {}

    def current(self) -> Types:
        """The types of the source's current program."""
        assert self.source is not None, "a registry without a source is asked with of(program)"
        return self.of(self.source.current())

    def of(self, program: Program) -> Types:
        """The types of `program`, compiled on first sight of that program object."""
        if program is not self._program:
            kept = self._kept.get(id(program))
            if kept is None or kept[0] is not program:
                # Reserved types exist even in an empty program (before any config is applied).
                types = [EventType(name=n) for n in RESERVED_EVENT_TYPES] + program.event_types
                if len(self._kept) >= self.KEPT:
                    self._kept.clear()
                kept = self._kept[id(program)] = (program, {t.name: compile_type(t) for t in types})
            self._program, self._types = kept
        return self._types

    def lookup(self, name: str) -> CompiledType | None:
        return self.current().get(name)


def compile_type(spec: EventType) -> CompiledType:
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
