"""`loyalty process delivery`: the command line of the delivery service (the loop: loop.py).

Like the other services' `service.py` (ingest, sinks, processors/runtime), this module only turns
arguments into options and runs the service, so `python -m processors.delivery.service` and the
`loyalty` CLI start the same thing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plumbing.observability import PORT_HELP, metrics_port
from processors.delivery.loop import DeliveryService, Options
from schemas.settings import Settings


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="loyalty process delivery")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".local/state/delivery"),
        help="only checked for a legacy disabled-endpoints.json, which is removed",
    )
    parser.add_argument("--instance-id", default=None, help="static group membership id")
    parser.add_argument("--metrics-port", type=int, default=metrics_port(), help=PORT_HELP)
    parser.add_argument("--group", default=None, help="consumer group (default: TOPIC_PREFIX + 'delivery')")
    args = parser.parse_args(argv)
    return Options(
        group_id=args.group,
        instance_id=args.instance_id,
        state_dir=args.state_dir,
        metrics_port=args.metrics_port,
    )


def main(argv: list[str] | None = None) -> int:
    from plumbing.logs import configure_logging

    configure_logging("delivery")
    DeliveryService(Settings.from_env(), options=parse_args(argv or [])).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
