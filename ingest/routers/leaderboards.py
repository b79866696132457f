"""/leaderboards: a board's top N and one customer's rank and score, for the current period
(read from the sink's leaderboard_scores; ranking rules in ingest/leaderboards.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ingest.dependencies import Ingest, IngestState
from ingest.errors import ApiError
from ingest.lookup import StoreUnavailable
from ingest.models import DataResponse
from ingest.routers.common import ERRORS, NOT_FOUND, PathId
from ingest.submit import unavailable
from schemas.leaderboards import period_end, period_start
from schemas.program import Leaderboard

router = APIRouter(prefix="/leaderboards", tags=["leaderboards"])
READ: dict[str, Any] = {"response_model": DataResponse, "responses": {**ERRORS, **NOT_FOUND}}
MAX_LIMIT = 100
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"entries (1-{MAX_LIMIT}, default 10)")]


def _board(state: IngestState, board_id: str) -> Leaderboard:
    board = state.programs.current().leaderboard(board_id)
    if board is None:
        raise ApiError(404, f"no leaderboard {board_id!r}")
    return board


def _describe(board: Leaderboard, now_ms: int) -> dict[str, Any]:
    start = period_start(board.period, now_ms)
    end = period_end(board.period, start)
    return {
        "id": board.id,
        "name": board.name,
        "metric": board.metric.model_dump(exclude_none=True),
        "period": board.period,
        "period_start": start.isoformat(),
        "period_end": end.isoformat() if end else None,
        "audience": board.audience,
    }


@router.get("/{board_id}", **READ)
async def top(board_id: PathId, state: Ingest, limit: Limit = 10) -> dict:
    """The current period's top `limit` customers: `entries` [{rank, customer_id, score}],
    score descending; equal scores share a rank (1, 2, 2, 4) and are listed by customer_id.
    Anonymous customers, customers whose consent refuses the board's purpose and, for a board
    with an audience, non-members are left out."""
    board = _board(state, board_id)
    now = state.clock()
    try:
        entries = await state.lookup.leaderboard_top(board.id, period_start(board.period, now), limit)
    except StoreUnavailable:
        raise unavailable(state, "leaderboard store unavailable") from None
    return {"data": {**_describe(board, now), "entries": entries}}


@router.get("/{board_id}/customers/{customer_id}", **READ)
async def customer_rank(board_id: PathId, customer_id: PathId, state: Ingest) -> dict:
    """A customer's rank and score on the board this period; 404 when they are not on it
    (nothing scored yet, or left out as in the top list)."""
    board = _board(state, board_id)
    now = state.clock()
    try:
        found = await state.lookup.leaderboard_entry(board.id, period_start(board.period, now), customer_id)
    except StoreUnavailable:
        raise unavailable(state, "leaderboard store unavailable") from None
    if found is None:
        raise ApiError(404, f"customer {customer_id!r} is not on leaderboard {board_id!r} this period")
    period = {k: v for k, v in _describe(board, now).items() if k.startswith("period")}
    data = {"leaderboard_id": board.id, "customer_id": customer_id, **period}
    return {"data": {**data, "rank": found["rank"], "score": found["score"]}}
