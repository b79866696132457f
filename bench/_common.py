"""What the processor benchmarks share: a fresh topic prefix with the program applied, rates,
and cleaning the prefix's topics away afterwards."""

from __future__ import annotations

import uuid

from deploy.topics import delete_topics, ensure_topics
from processors.runtime.config_table import publish_program
from schemas.program import Program
from schemas.settings import Settings


def rate(count: float, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


def fresh_settings(program: Program) -> Settings:
    """Settings on a new `bench-<id>.` prefix whose topics exist and carry `program`."""
    base = Settings.from_env()
    settings = Settings(
        kafka_bootstrap_servers=base.kafka_bootstrap_servers,
        topic_prefix=f"bench-{uuid.uuid4().hex[:8]}.",
        partitions=base.partitions,
    )
    ensure_topics(settings)
    publish_program(settings, program)
    return settings


def drop_topics(settings: Settings) -> None:
    delete_topics(settings.kafka_bootstrap_servers, settings.topic_prefix)
