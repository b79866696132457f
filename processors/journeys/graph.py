"""Journey definitions compiled for one program version: nodes, outgoing edges with compiled
CEL conditions, and an index of which event types matter at all (so most events cost nothing).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from processors.audiences.expressions import Condition, compile_condition
from schemas.program import Journey, JourneyNode, Program

MINUTE_MS = 60_000


@dataclass(frozen=True)
class Edge:
    index: int  # position among the node's outgoing edges (config order = priority)
    to: str
    event_type: str | None  # None: timed edge
    condition: Condition
    wait_ms: int


@dataclass(frozen=True)
class CompiledJourney:
    journey: Journey
    nodes: dict[str, JourneyNode]
    edges: dict[str, tuple[Edge, ...]]  # from node -> outgoing edges
    start: str
    exit_events: frozenset[str]

    @property
    def id(self) -> str:
        return self.journey.id

    def outgoing(self, node: str) -> tuple[Edge, ...]:
        return self.edges.get(node, ())

    def timed(self, node: str) -> tuple[Edge, ...]:
        return tuple(e for e in self.outgoing(node) if e.event_type is None)


def compile_journey(journey: Journey) -> CompiledJourney:
    nodes = {n.id: n for n in journey.nodes}
    start = next((n.id for n in journey.nodes if n.kind == "start"), journey.nodes[0].id)
    edges: dict[str, list[Edge]] = {}
    for e in journey.edges:
        out = edges.setdefault(e.from_, [])
        wait = round(e.wait_minutes * MINUTE_MS)
        out.append(Edge(len(out), e.to, e.event_type, compile_condition(e.condition), wait))
    frozen = {k: tuple(v) for k, v in edges.items()}
    return CompiledJourney(journey, nodes, frozen, start, frozenset(journey.exit_events))


@dataclass(frozen=True)
class CompiledJourneys:
    """The enabled journeys of one program version plus lookup indexes."""

    journeys: dict[str, CompiledJourney]
    by_entry_event: dict[str, tuple[CompiledJourney, ...]] = field(default_factory=dict)
    by_entry_audience: dict[str, tuple[CompiledJourney, ...]] = field(default_factory=dict)
    event_types: frozenset[str] = frozenset()  # every type that can enter, move or exit
    fingerprint: str = ""


def _index(pairs: list[tuple[str, CompiledJourney]]) -> dict[str, tuple[CompiledJourney, ...]]:
    out: dict[str, list[CompiledJourney]] = {}
    for key, journey in pairs:
        out.setdefault(key, []).append(journey)
    return {k: tuple(v) for k, v in out.items()}


def compile_program(program: Program) -> CompiledJourneys:
    compiled = {j.id: compile_journey(j) for j in program.journeys if j.enabled and j.nodes}
    values = list(compiled.values())
    types = set()
    for j in values:
        types |= j.exit_events
        types |= {e.event_type for es in j.edges.values() for e in es if e.event_type}
        if j.journey.entry_event:
            types.add(j.journey.entry_event)
    return CompiledJourneys(
        compiled,
        _index([(j.journey.entry_event, j) for j in values if j.journey.entry_event]),
        _index([(j.journey.entry_audience, j) for j in values if j.journey.entry_audience]),
        frozenset(types),
        hashlib.sha1("|".join(j.model_dump_json() for j in program.journeys).encode()).hexdigest(),
    )
