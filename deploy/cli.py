"""`loyalty`: one command line for every service and for the local stack.

Each subcommand imports its implementation only when run, so a service starts without loading
the others (and the CLI works while parts of the system are still being written).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

USAGE = """\
usage: loyalty <command> [args]

commands:
  stack up|down|status [--program FILE] [--services a,b]   the local stack under .local/
  ingest [--host H --port P --workers N]                    HTTP ingest service
  process loyalty|audiences|journeys|delivery [flags]       a stream processor
  sink [--metrics-port P]                                   Kafka -> PostgreSQL sink
  config apply FILE                                         publish a program YAML
  deliveries replay [flags]                                 re-send dead-lettered webhooks
  demo                                                      send a demo load to the stack
"""

PROCESSORS = ("loyalty", "audiences", "journeys")


class UsageError(Exception):
    """A command line we cannot run; the message says why."""


def _call(module: str, func: str = "main") -> Callable[[list[str]], int]:
    try:
        return getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise UsageError(f"{module} is not available in this installation") from None
        raise


def _stack(args: list[str]) -> int:
    return _call("deploy.local.stack")(args)


def _ingest(args: list[str]) -> int:
    return _call("ingest.service")(args)


def _process(args: list[str]) -> int:
    if not args or args[0] not in (*PROCESSORS, "delivery"):
        raise UsageError(f"process: name must be one of {', '.join(PROCESSORS)}, delivery")
    name, rest = args[0], args[1:]
    if name == "delivery":
        return _call("processors.delivery.service")(rest)
    build = _call(f"processors.{name}.processor", "build")
    run_service = _call("processors.runtime.service", "run_service")
    return run_service(build(), rest) or 0


def _sink(args: list[str]) -> int:
    return _call("sinks.service")(args)


def _config(args: list[str]) -> int:
    if len(args) != 2 or args[0] != "apply":
        raise UsageError("usage: loyalty config apply FILE")
    return apply_config(args[1])


def apply_config(path: str) -> int:
    """Validate the YAML (after ${ENV} expansion) and publish it as the next version."""
    import os
    from pathlib import Path

    import yaml
    from pydantic import ValidationError

    from processors.runtime.config_table import publish_program
    from schemas.program import Program
    from schemas.settings import Settings

    try:
        text = os.path.expandvars(Path(path).read_text())
        program = Program.model_validate(yaml.safe_load(text) or {})
    except (OSError, ValidationError, yaml.YAMLError) as exc:
        print(f"loyalty config apply: {path}: {exc}", file=sys.stderr)
        return 1
    from processors.loyalty.validate import rule_errors

    if errors := rule_errors(program):
        print(f"loyalty config apply: {path}: invalid rules:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    version = publish_program(Settings.from_env(), program)
    print(f"applied {path} as program version {version}")
    return 0


def _deliveries(args: list[str]) -> int:
    if not args or args[0] != "replay":
        raise UsageError("usage: loyalty deliveries replay [flags]")
    return _call("processors.delivery.replay")(args[1:])


def _demo(args: list[str]) -> int:
    return _call("deploy.local.demo")(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "stack": _stack,
    "ingest": _ingest,
    "process": _process,
    "sink": _sink,
    "config": _config,
    "deliveries": _deliveries,
    "demo": _demo,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    handler = COMMANDS.get(argv[0])
    try:
        if handler is None:
            raise UsageError(f"unknown command {argv[0]!r}")
        return handler(argv[1:]) or 0
    except UsageError as exc:
        print(f"loyalty: {exc}\n\n{USAGE}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
