"""The ingest supervisor's sockets and options, without starting workers (the processes are
tested in tests/integration/test_ingest_workers.py)."""

from __future__ import annotations

import socket

import pytest

from ingest.service import parse_args
from ingest.workers import check_address, worker_socket


def test_workers_share_a_port_and_a_taken_port_is_refused():
    port = check_address("127.0.0.1", 0)
    first, second = worker_socket("127.0.0.1", port), worker_socket("127.0.0.1", port)
    try:
        first.listen()
        second.listen()  # one SO_REUSEPORT group: both accept connections on the port
        with pytest.raises(OSError):  # ... and a second service sees the port as taken
            check_address("127.0.0.1", port)
    finally:
        first.close()
        second.close()
    assert check_address("127.0.0.1", port) == port  # free again once its sockets are closed


def test_a_plain_listener_keeps_workers_off_its_port():
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(OSError):
            check_address("127.0.0.1", port)
        with pytest.raises(OSError):
            worker_socket("127.0.0.1", port)


def test_options_from_flags_and_environment(monkeypatch):
    monkeypatch.setenv("INGEST_WORKERS", "3")
    monkeypatch.setenv("INGEST_PORT", "9001")
    args = parse_args(["--host", "127.0.0.1"])
    assert (args.host, args.port, args.workers) == ("127.0.0.1", 9001, 3)
    assert parse_args(["--workers", "2"]).workers == 2
    with pytest.raises(SystemExit):
        parse_args(["--workers", "0"])
