"""Run every bench/*.py module that defines `main()`, in name order; non-zero if any failed.

`python -m bench [name ...]` runs only the named modules.
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


def run(name: str) -> bool:
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
    try:
        result = main([]) if inspect.signature(main).parameters else main()
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
    with services():
        failed = [name for name in modules(argv) if not run(name)]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
