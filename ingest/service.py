"""`loyalty ingest`: run the API under uvicorn in N worker processes (ingest/workers.py).

Each worker builds its own app (create_app via the factory), so each has its own Kafka
producer, reply listener and instance id, and its own listening socket on the shared port.
"""

from __future__ import annotations

import argparse
import os

from ingest.workers import Options, Supervisor
from plumbing.logs import configure_logging


def app_factory():
    from ingest.app import create_app

    configure_logging("ingest")
    return create_app()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="loyalty ingest", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("INGEST_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("INGEST_PORT", "8080")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("INGEST_WORKERS", "1")))
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info").lower())
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv if argv is not None else [])
    configure_logging("ingest")
    return Supervisor(Options(args.host, args.port, args.workers, args.log_level)).run()


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
