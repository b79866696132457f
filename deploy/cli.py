"""`loyalty`: one command line for every service and for the local stack.

Each subcommand imports its implementation only when run, so a service starts without loading
the others (and the CLI works while parts of the system are still being written).
"""

from __future__ import annotations

import getpass
import importlib
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemas.program import Program

USAGE = """\
usage: loyalty <command> [args]

commands:
  stack up|down|status [--program FILE] [--services a,b]   the local stack under .local/
  ingest [--host H --port P --workers N]                    HTTP ingest service
  process loyalty|audiences|journeys|delivery [flags]       a stream processor
  sink [--metrics-port P]                                   Kafka -> PostgreSQL sink
  config apply FILE                                         publish a program YAML (${NAME}: env)
  deliveries replay [flags]                                 re-send dead-lettered webhooks
  dlq list PROCESSOR [--limit N] [--json]                   a processor's dead letters: what, why, from where
  dlq replay PROCESSOR --offset P:O..|--all [--dry-run]     re-inject them into their source topic
  backtest --program FILE [--since 30d] [--json]             replay stored events through a proposed program
  demo [--timeout S]                                        a demo load; shows every part work
  dashboard [--host H --port P]                             the browser dashboard (docs/dashboard.md)
"""

PROCESSORS = ("loyalty", "audiences", "journeys", "router")


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


SECRET_KEYS = frozenset({"secret", "previous_secrets"})
ENV_REF = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ProgramFileError(ValueError):
    """A program file that cannot be published; the message says why."""


def expand_env(value: Any, env: Mapping[str, str], where: str = "") -> Any:
    """`${NAME}` in every string of parsed YAML -> env[NAME]; `$${NAME}` -> a literal `${NAME}`.

    Expanded after parsing, so a value (a URL with ':' or '#') cannot change the YAML structure.
    A name not in `env` is refused: a webhook URL left as '${RECEIVER_URL}' would only fail later,
    at delivery time, where nobody looks.

    Secrets (`secret`, `previous_secrets`) are not expanded: `${NAME}` there is a reference the
    delivery service resolves from its own environment at send time, so the secret never enters
    program.config, the admin API or the program history in clear."""
    if isinstance(value, dict):
        return {
            k: v if k in SECRET_KEYS else expand_env(v, env, f"{where}.{k}" if where else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_env(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    missing = [m[2] for m in ENV_REF.finditer(value) if not m[1] and m[2] not in env]
    if missing:
        names = ", ".join(dict.fromkeys(missing))
        raise ProgramFileError(f"{where or 'value'}: {value!r} needs environment variable {names}, not set")
    return ENV_REF.sub(lambda m: f"${{{m[2]}}}" if m[1] else env[m[2]], value)


def load_program(path: Path, env: Mapping[str, str] | None = None) -> Program:
    """Parse, expand `${NAME}` (from `env`, default os.environ) and validate a program YAML."""
    import yaml
    from pydantic import ValidationError

    from schemas.program import Program

    try:
        data = yaml.safe_load(path.read_text()) or {}
        data = expand_env(data, os.environ if env is None else env)
        return Program.model_validate(data)
    except (OSError, ValidationError, yaml.YAMLError) as exc:
        raise ProgramFileError(str(exc)) from exc


def apply_config(path: str) -> int:
    """Validate the YAML (after ${NAME} expansion) and publish it as the next version."""
    from plumbing.config_table import publish_program
    from schemas.settings import Settings

    try:
        program = load_program(Path(path))
    except ProgramFileError as exc:
        print(f"loyalty config apply: {path}: {exc}", file=sys.stderr)
        return 1
    from processors.loyalty.validate import rule_errors

    if errors := rule_errors(program):
        print(f"loyalty config apply: {path}: invalid rules:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    from ingest.history import Change, change_records

    # recorded like an admin write: program.history (versions, rollback) and admin.audit
    change = Change(actor=f"loyalty config apply ({getpass.getuser()})", action="config.apply")
    version = publish_program(Settings.from_env(), program, extra=change_records(program, change))
    print(f"applied {path} as program version {version}")
    return 0


def _deliveries(args: list[str]) -> int:
    if not args or args[0] != "replay":
        raise UsageError("usage: loyalty deliveries replay [flags]")
    return _call("processors.delivery.replay")(args[1:])


DLQ_REPLAY_HELP = """\
Re-produce dead letters' original key and value bytes to their source topic (the key picks the
partition, murmur2_random as every producer), with a header dlq.replayed-from=<dlq topic>:P:O.
Replaying does not remove them from the dead-letter topic (Kafka topics are append-only): a dead
letter replayed twice is re-injected twice. Timer dead letters have no source record and are
refused (skipped, with the reason, by --all)."""


def _dlq_parser() -> Any:
    import argparse

    from deploy.dlq import parse_position

    def position(text: str) -> tuple[int, int]:
        try:
            return parse_position(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def count(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
        return int(text)

    parser = argparse.ArgumentParser(prog="loyalty dlq", description="a stream processor's dead letters")
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="print the dead letters of a processor")
    listing.add_argument("processor", help="loyalty, journeys, sink, ... (its topic is <processor>.dlq)")
    listing.add_argument("--limit", type=count, default=None, metavar="N", help="at most N dead letters")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    again = sub.add_parser("replay", help="re-inject dead letters into their source topic",
                           description=DLQ_REPLAY_HELP)  # fmt: skip
    again.add_argument("processor", help="whose <processor>.dlq to replay from")
    chosen = again.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--offset", type=position, action="extend", nargs="+", metavar="P:O",
                        help="dead letters by partition:offset in the dead-letter topic")  # fmt: skip
    chosen.add_argument("--all", action="store_true", help="every dead letter of the topic")
    again.add_argument("--dry-run", action="store_true", help="show what would be replayed, produce nothing")
    return parser


def _dlq(args: list[str]) -> int:
    import orjson

    from deploy import dlq
    from schemas.settings import Settings

    opts = _dlq_parser().parse_args(args)
    settings = Settings.from_env()
    topic = dlq.physical_topic(settings, opts.processor)
    try:
        if opts.action == "list":
            count = 0
            for letter in dlq.read_dead_letters(settings, opts.processor, limit=opts.limit):
                count += 1
                print(orjson.dumps(letter.as_json()).decode() if opts.json else letter.describe())
            if not opts.json:
                print(f"{_letters(count)} in {topic}")
            return 0
        wanted = None if opts.all else {p for p, _ in opts.offset}
        letters = dlq.read_dead_letters(settings, opts.processor, partitions=wanted)
        plan = dlq.plan_replay(letters, None if opts.all else opts.offset)
        for letter, why in plan.skipped:
            print(f"skipped {letter.position}: {why}")
        if opts.dry_run:
            for letter in plan.letters:
                key = dlq.show_key(letter.key)
                print(f"would replay {letter.position} -> {letter.source_topic}  key {key}")
            print(f"dry run: {_letters(len(plan.letters))} would be replayed; nothing produced")
            return 0
        for done in dlq.replay(settings, plan):
            print(f"replayed {dlq.describe_replayed(done)}")
        print(f"replayed {_letters(len(plan.letters))}; they stay in {topic} "
              "(Kafka topics are append-only)")  # fmt: skip
        return 0
    except dlq.DlqError as exc:
        print(f"loyalty dlq {opts.action}: {exc}", file=sys.stderr)
        return 1


def _letters(count: int) -> str:
    return f"{count} dead letter{'s' * (count != 1)}"


def _backtest(args: list[str]) -> int:
    return _call("deploy.backtest")(args)


def _demo(args: list[str]) -> int:
    return _call("deploy.local.demo")(args)


def _dashboard(args: list[str]) -> int:
    return _call("dashboard.service")(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "stack": _stack,
    "ingest": _ingest,
    "process": _process,
    "sink": _sink,
    "config": _config,
    "deliveries": _deliveries,
    "dlq": _dlq,
    "backtest": _backtest,
    "demo": _demo,
    "dashboard": _dashboard,
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
