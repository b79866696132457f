"""Admin writes: how long publishing a program version takes (what a program manager waits for
on every POST, PUT, PATCH or rollback under /admin, before ingest's read-your-writes wait of a
few ms), with the process's publisher kept between publishes against a new publisher for each
(the way before, `init_transactions` every time), alternating in the same run; and the reads a
publish and `GET /admin/program/versions` make. `python -m bench admin [--publishes N]`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from bench._common import drop_topics, fresh_settings
from ingest.history import KafkaHistory
from plumbing import config_table
from plumbing.config_table import latest_program, publish_program
from schemas.program import Program


def timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def fresh_publish(settings) -> None:
    """A publish from a new publisher (its init_transactions fences the kept one)."""
    with config_table._PUBLISHING:
        config_table._KEPT.clear()
    publish_program(settings, Program())


def line(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return f"{name:34s} p50 {statistics.median(ms):7.1f} ms   max {ms[-1]:7.1f} ms   ({len(ms)} runs)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.admin", description="program publish latency")
    parser.add_argument("--publishes", type=int, default=20, help="publishes of each kind (default 20)")
    args = parser.parse_args(argv)
    settings = fresh_settings(Program())
    try:
        kept: list[float] = []
        fresh: list[float] = []
        for _ in range(args.publishes):  # alternating, so both see the same broker
            fresh.append(timed(lambda: fresh_publish(settings)))
            kept.append(timed(lambda: publish_program(settings, Program())))
        reads = [timed(lambda: latest_program(settings)) for _ in range(args.publishes)]
        history = [timed(KafkaHistory(settings).versions) for _ in range(args.publishes)]
    finally:
        drop_topics(settings)
    print(line("publish, kept publisher", kept))
    print(line("publish, new publisher each time", fresh))
    print(line("latest_program (a publish's read)", reads))
    print(line("program.history read", history))
    print(f"new / kept publisher, p50 = {statistics.median(fresh) / statistics.median(kept):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
