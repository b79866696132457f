"""`loyalty sink`: run the PostgreSQL sink with /healthz and /metrics; SIGTERM stops it cleanly."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from plumbing.logs import configure_logging
from plumbing.observability import PORT_HELP, HealthServer, metrics_port
from schemas.settings import Settings
from sinks.migrate import upgrade
from sinks.sink import Sink, SinkOptions

log = logging.getLogger("sinks.service")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="loyalty sink", description=__doc__)
    p.add_argument("--metrics-port", type=int, default=metrics_port(), help=PORT_HELP)
    p.add_argument("--batch-size", type=int, default=SinkOptions.batch_size)
    p.add_argument("--linger-ms", type=int, default=SinkOptions.linger_ms)
    p.add_argument("--group-id", default=None, help="default: {TOPIC_PREFIX}sink")
    p.add_argument("--instance-id", default=None, help="static group membership id")
    p.add_argument("--no-migrate", action="store_true", help="skip the Alembic upgrade")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    configure_logging("sink")
    settings = Settings.from_env()
    if not args.no_migrate:
        upgrade(settings.database_url)
    options = SinkOptions(
        batch_size=args.batch_size,
        linger_ms=args.linger_ms,
        group_id=args.group_id,
        instance_id=args.instance_id,
    )
    sink = Sink(settings, options)
    server = HealthServer(args.metrics_port, sink.health).start()
    log.info("health and metrics served", extra={"port": server.port})
    signal.signal(signal.SIGTERM, lambda *_: sink.request_stop())
    signal.signal(signal.SIGINT, lambda *_: sink.request_stop())
    try:
        sink.run()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
