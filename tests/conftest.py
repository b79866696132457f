"""Shared fixtures: a real Kafka broker and a real PostgreSQL server for the whole session.

`KAFKA_BOOTSTRAP_SERVERS` / `DATABASE_URL` when set; otherwise the local stack
(deploy/local) starts a throwaway broker and cluster under .local/ for the test session.
Each test gets an isolated TOPIC_PREFIX (and may ask for a fresh database) so tests never
see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from plumbing.topic_admin import delete_topics, ensure_topics
from processors.delivery.receiver import Receiver
from schemas.settings import Settings

# Property tests explore new random cases on every developer run; CI (CI=true, set by .ci/run)
# replays a fixed derandomized set, so a landing never depends on the luck of one draw. A case
# a developer run finds is fixed, and kept as an explicit example.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    from deploy.local import kafka

    with kafka.test_broker() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    from deploy.local import postgres

    with postgres.test_cluster() as url:
        yield url


@pytest.fixture
def settings(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings with a unique topic prefix; the topics of schemas.topics already exist.

    Tests use 3 partitions (TEST_TOPIC_PARTITIONS) to keep the session's broker light, and the
    prefix's topics (changelogs included) are deleted afterwards.
    """
    prefix = f"t{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("TOPIC_PREFIX", prefix)
    monkeypatch.setenv("TOPIC_PARTITIONS", os.environ.get("TEST_TOPIC_PARTITIONS", "3"))
    s = Settings.from_env()
    ensure_topics(s)
    yield s
    delete_topics(kafka_bootstrap, prefix)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local webhook receiver (its own HTTP server), closed after the test."""
    r = Receiver()
    yield r
    r.close()
