"""The local broker's set-up, without starting a JVM."""

import base64

from deploy.local import kafka


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch):
    """`kafka-storage format -t -x...` reads such an id as an option and fails."""
    ids = iter([b"\xfb" + bytes(15), bytes(16)])  # the first encodes to "-wAAAA..."
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: type("U", (), {"bytes": next(ids)})())
    assert base64.urlsafe_b64encode(b"\xfb" + bytes(15)).decode().startswith("-")
    cluster_id = kafka._cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(bytes(16)).decode().rstrip("=")
    assert len(cluster_id) == 22
