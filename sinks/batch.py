"""A batch in memory: reduced rows per target, the records they came from, the offsets they
cover and the records that cannot become rows (quarantined, see sinks.rejects)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from schemas.program import Program
from schemas.topics import LOYALTY_RESULTS
from sinks.leaderboards import score_rows
from sinks.mapping import Source, rows_for
from sinks.rejects import Original, Reject
from sinks.tables import TARGETS

Row = dict[str, Any]
Rows = dict[str, dict[tuple, Row]]  # target name -> natural key -> reduced row
# target name -> its rows' values in column order and their binary COPY data (None: as text)
Encoded = dict[str, tuple[list[tuple], bytes | None]]


@dataclass(slots=True)
class Entry:
    """One consumed record and the rows it contributes, kept so that a row the database
    refuses can be traced back to its record and quarantined alone."""

    topic: str  # physical topic
    partition: int
    offset: int
    value: Row
    pairs: list[tuple[str, Row]]
    original: Original | None = None  # Kafka key and value bytes, for a reject's dead letter


def _key_of(key: tuple[str, ...]) -> Callable[[Row], tuple]:
    if len(key) == 1:
        get = itemgetter(key[0])
        return lambda row: (get(row),)
    return itemgetter(*key)


# per target: its natural key's getter (a tuple) and its reduce rule
_FOLD = {name: (_key_of(target.key), target.reduce) for name, target in TARGETS.items()}


def put(rows: Rows, name: str, row: Row) -> None:
    """Fold `row` into `rows` under its natural key with the target's reduce rule."""
    key_of, reduce = _FOLD[name]
    bucket = rows.get(name)
    if bucket is None:
        bucket = rows[name] = {}
    key = key_of(row)
    old = bucket.get(key)
    bucket[key] = row if old is None else reduce(old, row)


def reduce_entries(entries: list[Entry]) -> Rows:
    """The rows of `entries` folded as a batch of just those records would fold them."""
    rows: Rows = {}
    for entry in entries:
        for name, row in entry.pairs:
            put(rows, name, row)
    return rows


@dataclass
class Batch:
    """Rows reduced to one per natural key, and the offsets they cover."""

    rows: Rows = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, part) -> next
    records: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    config_version: int = -1  # the program version the sink had read (stored with rejects)
    encoded: Encoded = field(default_factory=dict)  # made before the write (writer.prepare)

    def add(self, value: Row, src: Source, physical_topic: str, program: Program | None = None) -> None:
        """Fold one decoded record in; one that cannot be mapped to rows is quarantined.
        `program` (the one a result was computed with, or later) scores the leaderboards."""
        self._advance(src, physical_topic)
        try:
            pairs = rows_for(value, src)
            if program is not None and src.topic == LOYALTY_RESULTS:
                pairs += score_rows(program, value)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self.rejects.append(Reject.unmappable(physical_topic, src, value, exc))
            return
        for name, row in pairs:
            put(self.rows, name, row)
        self.entries.append(Entry(physical_topic, src.partition, src.offset, value, pairs, src.original))

    def add_undecodable(self, src: Source, physical_topic: str, reject: Reject) -> None:
        """A record the codec refused: its offset is covered and it goes to quarantine."""
        self._advance(src, physical_topic)
        self.rejects.append(reject)

    def put(self, name: str, row: Row) -> None:
        put(self.rows, name, row)

    def _advance(self, src: Source, physical_topic: str) -> None:
        self.records += 1
        self.per_topic[src.topic] = self.per_topic.get(src.topic, 0) + 1
        self.offsets[(physical_topic, src.partition)] = src.offset + 1

    def row_count(self) -> int:
        return sum(len(b) for b in self.rows.values())

    def __len__(self) -> int:
        return self.records
