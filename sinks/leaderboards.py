"""Leaderboard scores from loyalty results: what each result adds to each board (pure).

Why the sink: the scores must be a table with an index on (board, period, score) so that a
top N and a customer's rank answer within 50 ms on a board of 1M customers, and the sink is
what turns results into rows exactly once (rows and offsets in one transaction). Each result
adds a delta to (board, period start, customer) in `leaderboard_scores`; PostgreSQL keeps the
eligibility flag (anonymous, consent, audience) and the per-bucket counts that ranks read
(migrations 0007_leaderboards and 0009_leaderboard_buckets, docs/loyalty.md "Leaderboards").

Metrics: `points` / `reward_units` sum what the result's ledger lines earned of the reward
(ACCUMULATION, ADJUSTMENT and REVERSAL lines, so a reversal or a debit adjustment takes back, in
the period it happens: the same rule as `lifetime_points`); `event_count` counts an event of the
type whose condition holds when it is RESOLVED (at once, or by FULFILL) in the period of its
`issued_at`, and takes it back from that period when it is REVERSED.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Any

import orjson

from plumbing.config_table import ProgramTable
from processors.audiences.expressions import Condition, compile_condition, floats
from schemas.leaderboards import period_start
from schemas.program import Leaderboard, Program
from schemas.settings import Settings
from schemas.topics import LOYALTY_RESULTS

log = logging.getLogger("sinks.leaderboards")
Row = dict[str, Any]
TARGET = "leaderboard_scores"
EARNING_KINDS = ("ACCUMULATION", "ADJUSTMENT", "REVERSAL")
LEDGER_KEYS = ("accumulations", "redemptions", "reversals")  # where those lines are
_conditions: dict[tuple[int, str], Condition] = {}  # (id(program), board id) -> compiled


def _condition(program: Program, board: Leaderboard) -> Condition:
    key = (id(program), board.id)
    found = _conditions.get(key)
    if found is None:
        if len(_conditions) > 256:  # old program versions
            _conditions.clear()
        found = _conditions[key] = compile_condition(board.metric.condition)
    return found


def _loads(text: Any) -> Any:
    if isinstance(text, dict):
        return text
    try:
        return orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return {}


def _earned(board: Leaderboard, detail: Row) -> list[tuple[float, int]]:
    """(amount, issued_at) of each earning ledger line of the board's reward."""
    reward = board.metric.reward_id or "POINTS"
    out = []
    for key in LEDGER_KEYS:
        for line in detail.get(key) or []:
            if not isinstance(line, dict) or line.get("reward_id") != reward:
                continue
            amount, at = line.get("amount"), line.get("issued_at")
            if line.get("kind") in EARNING_KINDS and isinstance(amount, int | float) and isinstance(at, int):
                out.append((float(amount), at))
    return out


def _counted(program: Program, board: Leaderboard, res: Row, event: Row) -> list[tuple[float, int]]:
    if res.get("type") != board.metric.event_type:
        return []
    kind, status = res.get("kind") or "EVENT", res.get("status")
    if kind in ("EVENT", "FULFILL") and status == "RESOLVED":
        delta = 1.0
    elif kind == "REVERSE" and status == "REVERSED":  # the reversed event, in its own period
        delta = -1.0
    else:
        return []
    at = event.get("issued_at") or res.get("processed_at")
    if not isinstance(at, int):
        return []
    view = {**event, "properties": _loads(event.get("properties"))}
    as_floats = floats(view)
    if not _condition(program, board)({"event": as_floats, "properties": as_floats["properties"]}):
        return []
    return [(delta, at)]


def score_rows(program: Program, res: Row) -> list[tuple[str, Row]]:
    """The `leaderboard_scores` deltas of one Result record under `program`."""
    if not program.leaderboards:
        return []
    detail = _loads(res.get("detail"))
    if not isinstance(detail, dict) or detail.get("duplicate"):
        return []
    event = detail.get("event") if isinstance(detail.get("event"), dict) else {}
    out: dict[tuple[str, date], Row] = {}
    for board in program.leaderboards:
        if board.metric.kind == "event_count":
            deltas = _counted(program, board, res, event)
        else:
            deltas = _earned(board, detail)
        for amount, at in deltas:
            start = period_start(board.period, at)
            row = out.setdefault(
                (board.id, start),
                {
                    "board_id": board.id,
                    "period_start": start,
                    "customer_id": res["customer_id"],
                    "score": 0.0,
                    "audience_id": board.audience,
                    "consent_purpose": board.consent_purpose,
                    "updated_at": datetime.fromtimestamp((res.get("processed_at") or at) / 1000, UTC),
                },
            )
            row["score"] += amount
    return [(TARGET, row) for row in out.values() if row["score"]]


class ScoringPrograms:
    """The program the sink scores results with: the program.config global table, waited on
    (up to `wait_s`) when a result was computed with a version the sink has not read yet, so a
    board scores every result computed after it was published."""

    def __init__(self, settings: Settings, wait_s: float = 10.0) -> None:
        self._table = ProgramTable(settings)
        self._wait_s = wait_s
        self._started = False

    def start(self) -> None:
        self._table.start()
        self._started = True

    def stop(self) -> None:
        if self._started:
            self._table.stop()

    @property
    def version(self) -> int:
        """The program version read so far (-1 before the table is read)."""
        return self._table.version if self._started else -1

    def for_record(self, topic: str, value: Row) -> Program | None:
        if topic != LOYALTY_RESULTS or not self._started:
            return None
        version = value.get("config_version") or 0
        if version > self._table.version:
            try:
                return self._table.wait_for_version(version, self._wait_s)
            except TimeoutError:
                log.warning("program version %s not read yet; scoring with %s", version, self._table.version)
        return self._table.current()
