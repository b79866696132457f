"""How a Runner runs (state directory, commit cadence, timeouts, error policy), and when to commit."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processors.runtime.clock import Clock, SystemClock
from processors.runtime.restore_worker import PARALLEL_MIN_RECORDS, default_workers


@dataclass
class RuntimeOptions:
    state_dir: Path = Path(".local/state")
    instance_id: str = field(default_factory=socket.gethostname)
    clock: Clock = field(default_factory=SystemClock)
    metrics_port: int | None = None  # None: no HTTP server; 0: any free port
    commit_interval_ms: int = 100
    commit_every: int = 10_000
    # While polls come back full (a backlog), a transaction may run this long instead: fewer
    # commits (each blocks the loop on broker round trips), so the backlog drains faster.
    catch_up_interval_ms: int = 1000
    static_membership: bool = False  # group.instance.id = instance_id: no rebalance on restart
    transaction_timeout_ms: int = 10_000
    # the whole revoke path (committing the open transaction, or aborting it) gets this long
    revoke_timeout_s: float = 10.0
    session_timeout_ms: int = 6_000
    poll_batch: int = 500
    consumer_config: dict[str, Any] = field(default_factory=dict)
    producer_config: dict[str, Any] = field(default_factory=dict)
    # "dlq": a record that cannot be decoded or whose handler raises goes to <processor>.dlq
    # and processing goes on; "fail": the processor stops (see dead_letters.py)
    error_policy: str = "dlq"
    # the largest record produced (bytes); None: the smallest max.message.bytes of the topics
    # written, read at start (limits.py); producer_config["message.max.bytes"] caps it too
    max_record_bytes: int | None = None
    # the watchdog: records pending and no commit for this long -> exit 1 (/healthz 503 from
    # half of it), for the supervisor to restart a process that cannot make progress
    stall_timeout_s: float = 120.0
    # a restore of at least `restore_parallel_min_records` changelog records is spread over
    # this many worker processes, whole partitions each (restore_worker.py); 1: in-process only
    restore_workers: int = field(default_factory=default_workers)  # RESTORE_WORKERS or the CPUs
    restore_parallel_min_records: int = PARALLEL_MIN_RECORDS


def commit_due(opts: RuntimeOptions, records: int, elapsed_ms: float, catching_up: bool) -> bool:
    """Commit after `commit_every` records or the commit interval; the longer catch-up interval
    while polls come back full (a backlog: latency is set by the backlog then, not the commit)."""
    interval = opts.catch_up_interval_ms if catching_up else opts.commit_interval_ms
    return records >= opts.commit_every or elapsed_ms >= interval
