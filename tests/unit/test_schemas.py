"""Contracts: the codec's wire format and the backward compatibility of every schema."""

from __future__ import annotations

import json
import struct
import uuid

import pytest

from schemas.codec import AVRO_DIR, MAGIC, Codec, CodecError, decode, encode, schema_fingerprint
from schemas.compat import committed_versions, incompatibility
from schemas.topics import TOPICS

EVENT = {"id": "e1", "customer_id": "c1", "type": "PURCHASE", "issued_at": 1, "received_at": 2}
RESULT = {"event_id": "e1", "customer_id": "c1", "type": "PURCHASE", "status": "RESOLVED", "processed_at": 3}
NOTE = {"id": "n1", "event": "CUSTOMER_ACCUMULATION", "customer_id": "c1", "data": "{}", "created_at": 3}


def test_single_object_encoding_has_magic_and_fingerprint():
    data = encode("Event", EVENT)
    assert data[:2] == MAGIC == b"\xc3\x01"
    fingerprint = struct.unpack("<Q", data[2:10])[0]
    assert fingerprint != 0
    assert decode(data, "Event")["customer_id"] == "c1"


def test_defaults_are_filled_for_missing_optional_fields():
    value = decode(encode("Event", EVENT), "Event")
    assert value["kind"] == "EVENT" and value["fulfilled"] is True and value["redeem"] == []


def test_unknown_bytes_are_refused_with_a_clear_error():
    with pytest.raises(CodecError, match="magic"):
        decode(b"{}")
    with pytest.raises(CodecError, match="fingerprint"):
        decode(MAGIC + b"\x00" * 8 + b"\x00")


def test_old_writer_is_resolved_to_the_current_reader(tmp_path):
    """A record written by an older Event schema (without `coupon_code`) still decodes."""
    current = json.loads((AVRO_DIR / "event.avsc").read_text())
    old = {**current, "fields": [f for f in current["fields"] if f["name"] != "coupon_code"]}
    (tmp_path / "history").mkdir()
    (tmp_path / "event.avsc").write_text(json.dumps(current))
    (tmp_path / "history" / "event.v0.avsc").write_text(json.dumps(old))
    codec = Codec(tmp_path)
    data = Codec(tmp_path / "history").encode("Event", EVENT)  # a producer on the old schema
    assert codec.decode(data, "Event")["coupon_code"] is None


def test_every_topic_names_a_known_schema():
    codec = Codec()
    for spec in TOPICS.values():
        if spec.schema:
            codec.schema(spec.schema)


def test_checker_catches_a_new_field_without_default():
    old = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]}
    added = {**old, "fields": [*old["fields"], {"name": "b", "type": "string"}]}
    with_default = {**old, "fields": [*old["fields"], {"name": "b", "type": "string", "default": ""}]}
    assert incompatibility(old, added) is not None
    assert incompatibility(old, with_default) is None


@pytest.mark.parametrize("path", sorted(AVRO_DIR.glob("*.avsc")), ids=lambda p: p.name)
def test_schema_reads_every_previously_committed_version(path):
    """Backward compatibility: the working-tree schema reads data of each committed version."""
    current = json.loads(path.read_text())
    for commit, old in committed_versions(path):
        reason = incompatibility(old, current)
        assert reason is None, f"{path.name} cannot read data written by {commit[:8]}: {reason}"


@pytest.mark.parametrize("path", sorted(AVRO_DIR.glob("*.avsc")), ids=lambda p: p.name)
def test_every_committed_version_stays_decodable(path):
    """A record a producer wrote with any committed version is decoded: a superseded version
    must be kept under schemas/avro/history/ (or the record is dead-lettered as unknown)."""
    known = Codec()._writers  # noqa: SLF001 - the fingerprints the decoder knows
    for commit, old in committed_versions(path):
        fp = schema_fingerprint(old)
        assert fp in known, f"{path.name} of {commit[:8]} ({fp.hex()}) is not in schemas/avro/history/"


def test_the_wallet_record_versions_have_their_documented_fingerprints():
    """docs/producing.md names them: a producer checks the bytes after C3 01 against them."""
    codec = Codec()
    assert codec.encode("Result", RESULT)[2:10].hex() == "d248c0f62b0d04e5"
    assert codec.encode("Notification", NOTE)[2:10].hex() == "c4719c74af949fce"
    old = Codec(AVRO_DIR / "history")
    assert old.encode("Result", RESULT)[2:10].hex() == "da36d5b64dad69ae"
    assert old.encode("Notification", NOTE)[2:10].hex() == "25490d4bb4d95f24"


@pytest.mark.parametrize("name", ["cust-1:order-7", "", "ünïcode:ref", "a" * 500])
def test_name_uuid_is_uuid5_of_the_url_namespace(name):
    from schemas.ids import name_uuid

    assert name_uuid(name) == str(uuid.uuid5(uuid.NAMESPACE_URL, name))
