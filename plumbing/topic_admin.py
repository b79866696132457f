"""Create the system's topics (idempotent): every topic in schemas.topics with its settings."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.settings import Settings
from schemas.topics import TOPICS, TopicSpec, topic_name


def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec] | None = None, timeout: float = 30.0
) -> list[str]:
    """Create missing topics; return the physical names created. Existing ones are left as is."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    wanted = {topic_name(s.name, settings): s for s in (specs or TOPICS.values())}
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = [
        NewTopic(
            name,
            num_partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            config=spec.kafka_config(),
        )
        for name, spec in wanted.items()
        if name not in existing
    ]
    return create(admin, new, timeout)


def create(admin: AdminClient, new: list[NewTopic], timeout: float = 30.0) -> list[str]:
    """Create topics, treating 'already exists' (a concurrent creator) as success."""
    if not new:
        return []
    created = []
    for name, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    return created


def delete_topics(bootstrap: str, prefix: str) -> None:
    """Best-effort removal of every topic whose name starts with `prefix` (a test's or a
    benchmark's own topics, changelogs included), so a shared broker does not fill up."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            try:
                future.result(30)
            except Exception:  # noqa: BLE001 - cleanup must not fail the caller
                pass
