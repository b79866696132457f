"""`loyalty dashboard [--host H] [--port P]`: the dashboard over HTTP (uvicorn, one process)."""

from __future__ import annotations

import argparse
import dataclasses

import uvicorn

from dashboard.app import create_app
from dashboard.config import DashboardConfig
from plumbing.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    config = DashboardConfig.from_env()
    parser = argparse.ArgumentParser(prog="loyalty dashboard", description=__doc__)
    parser.add_argument("--host", default=config.host)
    parser.add_argument("--port", type=int, default=config.port)
    args = parser.parse_args(argv)
    config = dataclasses.replace(config, host=args.host, port=args.port)
    configure_logging("dashboard")
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_config=None, access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
