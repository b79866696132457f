"""Where ingest gets the current program (event types) from; the compiled validators for it
are schemas/event_types.py, shared with the router and the loyalty processor.

`ProgramSource` is the seam: production uses the runtime's global-table reader
(plumbing.config_table.ProgramTable); tests inject a `StaticPrograms`.
"""

from __future__ import annotations

from typing import Any, Protocol

import jsonschema
import orjson

from ingest.audit import AuditQuery, entry, matches
from ingest.history import Change, change_records, first_per_version
from plumbing.config_table import VersionConflict
from schemas.codec import decode
from schemas.event_types import (  # noqa: F401 - re-exported: shared with the router and loyalty
    DEFAULT_VALIDATOR,
    CompiledType,
    ProgramSource,
    TypeRegistry,
)
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import ADMIN_AUDIT, PROGRAM_HISTORY


class ProgramPublisher(Protocol):
    def __call__(self, program: Program, change: Change | None = None) -> int:
        """Publish the next version; raises VersionConflict when `change.expected` is stale."""
        ...


class StaticPrograms:
    """A fixed, swappable program with the publisher's semantics in memory (compare-and-set,
    history and audit records): the unit tests' stand-in for program.config."""

    def __init__(self, program: Program | None = None, clock: Any = None) -> None:
        self.program = program or Program()
        self.records: list[tuple[str, str, bytes]] = []
        self.clock = clock

    def current(self) -> Program:
        return self.program

    def publish(self, program: Program, change: Change | None = None) -> int:
        if change and change.expected is not None and change.expected != self.program.version:
            raise VersionConflict(change.expected, self.program.version)
        version = self.program.version + 1
        if change:
            at = self.clock() if self.clock else None
            self.records += change_records(program, change, at)(self.program, version)
        self.program = program.model_copy(update={"version": version})
        return version

    def versions(self) -> list[dict[str, Any]]:
        return first_per_version([orjson.loads(v) for t, _, v in self.records if t == PROGRAM_HISTORY])

    async def entries(self, query: AuditQuery) -> list[dict[str, Any]]:
        found = [decode(v, "AdminAudit") for t, _, v in self.records if t == ADMIN_AUDIT]
        found = [r for r in reversed(found) if matches(r, query)]
        return [entry(r) for r in found[query.offset : query.offset + query.limit]]


def table_source(settings: Settings) -> ProgramSource:
    """The program.config global table, read in full and hot-swapped by the runtime."""
    from plumbing.config_table import ProgramTable

    table = ProgramTable(settings)
    start = getattr(table, "start", None)
    if callable(start):
        start()
    return table


def table_publisher(settings: Settings) -> ProgramPublisher:
    """publish_program with compare-and-set on `change.expected` and the change's history and
    audit records in the same transaction."""
    from plumbing.config_table import publish_program

    def publish(program: Program, change: Change | None = None) -> int:
        if change is None:
            return publish_program(settings, program)
        extra = change_records(program, change)
        return publish_program(settings, program, expected=change.expected, extra=extra)

    return publish


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
