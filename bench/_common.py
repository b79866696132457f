"""What the benchmarks share: a fresh topic prefix with the program applied, rates, cleaning
the prefix's topics away afterwards, a fresh database, CPU seconds."""

from __future__ import annotations

import argparse
import os
import uuid
from pathlib import Path

import psycopg

from plumbing.config_table import publish_program
from plumbing.topic_admin import delete_topics, ensure_topics
from schemas.program import Program
from schemas.settings import Settings, libpq_url


def rate(count: float, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


def fresh_settings(program: Program) -> Settings:
    """Settings on a new `bench-<id>.` prefix whose topics exist and carry `program`."""
    base = Settings.from_env()
    settings = Settings(
        kafka_bootstrap_servers=base.kafka_bootstrap_servers,
        topic_prefix=f"bench-{uuid.uuid4().hex[:8]}.",
        partitions=base.partitions,
    )
    ensure_topics(settings)
    publish_program(settings, program)
    return settings


def drop_topics(settings: Settings) -> None:
    delete_topics(settings.kafka_bootstrap_servers, settings.topic_prefix)


def fresh_database(server_url: str, prefix: str) -> str:
    """The URL of a new, empty `<prefix>_<id>` database on the server of `server_url` (not
    migrated; the caller drops it)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    base = libpq_url(server_url)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + "/" + name


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _seconds(fields: list[str], first: int) -> float:
    """Two adjacent clock-tick fields (user, system) as CPU seconds."""
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def cpu_by_process(pid: int) -> dict[int, float]:
    """User+system CPU seconds of a process and of each descendant, from /proc: a cost per
    event that stays comparable across runs even when other load shares the cores."""
    found: dict[int, float] = {}
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            found[current] = _seconds(_stat(current), 11)  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its descendants together."""
    return sum(cpu_by_process(pid).values())


def exited_children_cpu(pid: int) -> float:
    """CPU seconds of the children a process has already waited for (a loyalty processor's
    restore workers), which /proc counts apart from the live processes cpu_by_process reads."""
    try:
        return _seconds(_stat(pid), 13)  # cutime, cstime
    except OSError:
        return 0.0


def add_kafka_flag(parser: argparse.ArgumentParser) -> None:
    """--kafka / --no-kafka: also run a processor benchmark on the real runtime."""
    parser.add_argument(
        "--kafka",
        action=argparse.BooleanOptionalAction,
        default=bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")),
        help="also run on the real runtime (default: when KAFKA_BOOTSTRAP_SERVERS is set)",
    )
