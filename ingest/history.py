"""Program versions: what each publish records besides the new program (a `program.history`
entry and an `admin.audit` entry, committed in the publish's Kafka transaction), and how the
admin API reads the history back.

program.config is compacted (latest version only), so the versions live in `program.history`
(not compacted, kept forever, one JSON record per version). Its programs are stored with their
secrets masked (`${NAME}` references are kept): a rotated-out secret must not live on in a
topic kept forever. A rollback therefore keeps the current secret of every endpoint that still
exists (see ingest/admin.py).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from confluent_kafka import Consumer

from ingest.changes import mask, masked_diff, summary
from plumbing.config_table import Extra
from plumbing.kafka_util import read_to_end
from schemas.codec import encode
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import ADMIN_AUDIT, PROGRAM_HISTORY, topic_name


@dataclass(frozen=True)
class Change:
    """Who changes what, and the version the change was made against (None: any)."""

    actor: str
    action: str
    resource: str = "program"
    expected: int | None = None


def program_json(program: Program) -> dict[str, Any]:
    """The program as JSON without its version (a version is not part of what changed)."""
    body = program.model_dump(mode="json", by_alias=True)
    body.pop("version", None)
    return body


def change_records(program: Program, change: Change, clock_ms: int | None = None) -> Extra:
    """The history and audit records of publishing `program`, for publish_program's `extra`."""

    def extra(before: Program, version: int) -> list[tuple[str, str, bytes]]:
        at = clock_ms if clock_ms is not None else int(time.time() * 1000)
        after = program_json(program)
        changes = masked_diff(program_json(before), after)
        text = summary(changes)
        entry = {"version": version, "at": at, "actor": change.actor, "action": change.action,
                 "resource": change.resource, "version_before": before.version,
                 "summary": text, "program": mask(after)}  # fmt: skip
        audit = {"id": str(uuid.uuid4()), "at": at, "actor": change.actor, "action": change.action,
                 "resource": change.resource, "version_before": before.version,
                 "version_after": version, "summary": text,
                 "changes": orjson.dumps(changes).decode()}  # fmt: skip
        return [
            (PROGRAM_HISTORY, "program", orjson.dumps(entry)),
            (ADMIN_AUDIT, change.resource, encode("AdminAudit", audit)),
        ]

    return extra


class ProgramHistory(Protocol):
    def versions(self) -> list[dict[str, Any]]:
        """Every history entry, oldest first, one per version."""
        ...


def first_per_version(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[int, dict[str, Any]] = {}
    for entry in entries:
        if isinstance(entry.get("version"), int):
            seen.setdefault(entry["version"], entry)
    return [seen[v] for v in sorted(seen)]


class KafkaHistory:
    """Reads program.history to its end on every call: admin reads are rare, and a fresh read
    always includes the version just published (read_committed: only committed publishes; to
    the high watermark: a publish that has answered is in, see `read_to_end`)."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s

    def versions(self) -> list[dict[str, Any]]:
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "group.id": f"program-history-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        entries: list[dict[str, Any]] = []

        def keep(value: bytes) -> None:
            try:
                entries.append(orjson.loads(value))
            except orjson.JSONDecodeError:
                pass

        try:
            topic = topic_name(PROGRAM_HISTORY, self.settings)
            read_to_end(consumer, self.settings.kafka_bootstrap_servers, topic, keep, self.timeout_s)
        finally:
            consumer.close()
        return first_per_version(entries)
