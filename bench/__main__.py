"""Run every bench/*.py module that defines `main()`, in name order; non-zero if any failed.

`python -m bench [name [flag ...] ...]` runs only the named modules, in the order given, each
with the flags that follow its name up to the next benchmark's name:
`python -m bench delivery --rate 600 --seconds 5` runs `bench.delivery.main(["--rate", "600",
"--seconds", "5"])`, as `python -m bench.delivery --rate 600 --seconds 5` does. A flag value
that is itself a benchmark's name starts that benchmark instead; run the module directly then.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
import time
import traceback
from pathlib import Path


def modules(only: list[str]) -> list[str]:
    names = sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    return [n for n in names if not only or n in only]


def plan(argv: list[str]) -> list[tuple[str, list[str]]]:
    """(benchmark, its flags) for each benchmark to run: all of them without flags when `argv`
    is empty, else each name in `argv` with the tokens after it up to the next name."""
    names = modules([])
    if not argv:
        return [(name, []) for name in names]
    if argv[0] not in names:
        raise SystemExit(f"python -m bench: {argv[0]!r} is not a benchmark (one of: {', '.join(names)})")
    runs: list[tuple[str, list[str]]] = []
    for token in argv:
        if token in names:
            runs.append((token, []))
        else:
            runs[-1][1].append(token)
    return runs


def run(name: str, argv: list[str] | None = None) -> bool:
    try:
        module = importlib.import_module(f"bench.{name}")
    except Exception:  # noqa: BLE001 - report and go on with the next benchmark
        traceback.print_exc()
        return False
    main = getattr(module, "main", None)
    if not callable(main):
        return True
    print(f"== bench.{name}", flush=True)
    began = time.monotonic()
    argv = argv or []
    try:
        if inspect.signature(main).parameters:
            result = main(argv)
        elif argv:
            print(f"bench.{name}.main() takes no flags: {' '.join(argv)}", file=sys.stderr)
            return False
        else:
            result = main()
    except Exception:  # noqa: BLE001 - report and go on with the next benchmark
        traceback.print_exc()
        return False
    print(f"== bench.{name} done in {time.monotonic() - began:.1f}s", flush=True)
    return result in (None, 0)


def services() -> contextlib.ExitStack:
    """A throwaway Kafka broker and PostgreSQL cluster, as the tests use, unless
    KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL name running ones."""
    from deploy.local.kafka import test_broker
    from deploy.local.postgres import test_cluster

    stack = contextlib.ExitStack()
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = stack.enter_context(test_broker())
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"] = stack.enter_context(test_cluster())
    return stack


def main(argv: list[str]) -> int:
    runs = plan(argv)
    with services():
        failed = [name for name, flags in runs if not run(name, flags)]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
