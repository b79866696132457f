"""The processor-facing API: what a processor declares and what it may call.

A processor is a class with `name`, `inputs`, `outputs`, `stores`, a `process(ctx, record)`
handler and an optional `on_timer(ctx, timer)` handler. Everything a handler does through
`ctx` (emit, store writes, timers, counters) belongs to the current Kafka transaction: it
becomes visible together with the input offsets, or not at all. Processors never touch
confluent-kafka.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from schemas.program import Program

if TYPE_CHECKING:
    from prometheus_client import Counter


@dataclass(slots=True)
class Record:
    """One input record; `topic` is the logical name (no TOPIC_PREFIX), `value` is decoded."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: dict[str, Any]
    timestamp: int


@dataclass(frozen=True, slots=True)
class Timer:
    """A durable timer that came due; `key` is usually the customer id."""

    id: str
    key: str
    at: int
    payload: dict[str, Any] = field(default_factory=dict)


class Store(Protocol):
    """A key-value state store for one partition. Values are JSON-serialisable."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def put(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...

    def range(self, start: str | None = None, end: str | None = None) -> Iterator[tuple[str, Any]]:
        """Items with start <= key < end, in key order (both bounds optional)."""
        ...


class Context(Protocol):
    """Handed to every handler call; scoped to the record's partition."""

    partition: int

    @property
    def config(self) -> Program:
        """The latest program version (hot-swapped; an empty Program before any apply)."""
        ...

    def now(self) -> int:
        """Current time in epoch ms from the runtime's (injectable) clock."""
        ...

    def store(self, name: str) -> Store: ...

    def emit(self, topic: str, key: str, value: dict[str, Any]) -> None:
        """Produce `value` (encoded with the topic's Avro schema) to a declared output topic."""
        ...

    def schedule(self, at: int, key: str, payload: dict[str, Any], timer_id: str | None = None) -> str:
        """Fire `on_timer` at epoch ms `at` (once); reusing `timer_id` replaces that timer."""
        ...

    def cancel(self, timer_id: str) -> None: ...

    def timer(self, timer_id: str) -> Timer | None:
        """The timer set under `timer_id` and not yet fired or cancelled, if any."""
        ...

    def count(self, counter: Counter, *labels: str, amount: float = 1.0) -> None:
        """Increment a prometheus `counter` (its label values in order) when the transaction
        commits: an aborted or replayed transaction never counts twice (pending.py)."""
        ...


class Processor:
    """Base class: declare topics and stores, override the handlers."""

    name: ClassVar[str]
    inputs: ClassVar[list[str]]
    outputs: ClassVar[list[str]] = []
    stores: ClassVar[list[str]] = []
    # stores of few keys that every record reads (e.g. per campaign): their committed values
    # are kept in memory, so such a read costs no RocksDB lookup (store.TransactionalStore)
    cached_stores: ClassVar[frozenset[str]] = frozenset()
    # store -> the module of its local index (keys never logged, derived again at restore:
    # local_index.py); the runtime adds the timers' own
    local_indexes: ClassVar[dict[str, str]] = {}
    # store -> how its values become bytes, when not plain JSON (store.ValueCodec: dumps and
    # loads); only the processor's tasks decode values, so a restore never needs it
    store_codecs: ClassVar[dict[str, Any]] = {}
    # inputs keyed by the id whose state a partition owns: a record on another partition than
    # murmur2(key) gives (a producer with another partitioner) is forwarded there first
    route_by_key: ClassVar[bool] = True

    def process(self, ctx: Context, record: Record) -> None:
        raise NotImplementedError

    def on_timer(self, ctx: Context, timer: Timer) -> None:
        """Called inside the transaction when a timer scheduled by this partition is due."""

    def on_config(self, ctx: Context, program: Program) -> None:
        """Called once per owned partition (inside a transaction) when a new program version
        arrives, e.g. to re-evaluate every stored customer. Compile rules lazily per version."""
