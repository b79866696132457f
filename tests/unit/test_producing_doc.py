"""docs/producing.md lists the current fingerprint of every schema a producer writes or reads,
so a schema change cannot leave the producer contract stale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.codec import AVRO_DIR, schema_fingerprint
from schemas.topics import EVENTS_INBOUND, TOPICS

DOC = (Path(__file__).parents[2] / "docs" / "producing.md").read_text()
PRODUCER_FACING = ("event.avsc", "result.avsc")  # written to events.loyalty/tracking; read back


@pytest.mark.parametrize("name", PRODUCER_FACING)
def test_the_doc_lists_the_current_fingerprint(name: str) -> None:
    fingerprint = schema_fingerprint(json.loads((AVRO_DIR / name).read_text())).hex()
    row = next((line for line in DOC.splitlines() if f"`schemas/avro/{name}`" in line), "")
    assert f"`{fingerprint}`" in row, f"docs/producing.md: {name} is now {fingerprint}"


def test_the_json_topic_carries_raw_json() -> None:
    assert TOPICS[EVENTS_INBOUND].schema is None and TOPICS[EVENTS_INBOUND].key == "customer_id"
    assert "`events.inbound`" in DOC
