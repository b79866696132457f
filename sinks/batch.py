"""A batch in memory: reduced rows per target plus the next offset per partition."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sinks.mapping import Source, rows_for
from sinks.tables import TARGETS

Row = dict[str, Any]


@dataclass
class Batch:
    """Rows reduced to one per natural key, and the offsets they cover."""

    rows: dict[str, dict[tuple, Row]] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, part) -> next
    records: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    started: float = 0.0

    def add(self, value: Row | None, src: Source, physical_topic: str) -> None:
        """Fold one record in; `value` None (undecodable) only advances the offset."""
        self.records += 1
        self.per_topic[src.topic] = self.per_topic.get(src.topic, 0) + 1
        self.offsets[(physical_topic, src.partition)] = src.offset + 1
        if value is None:
            return
        for name, row in rows_for(value, src):
            self.put(name, row)

    def put(self, name: str, row: Row) -> None:
        target = TARGETS[name]
        bucket = self.rows.setdefault(name, {})
        key = tuple(row[k] for k in target.key)
        old = bucket.get(key)
        bucket[key] = row if old is None else target.reduce(old, row)

    def row_count(self) -> int:
        return sum(len(b) for b in self.rows.values())

    def __len__(self) -> int:
        return self.records
