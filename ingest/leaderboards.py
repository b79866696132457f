"""Leaderboard reads from the sink's `leaderboard_scores` (migrations 0007_leaderboards and
0009_leaderboard_buckets).

Ranking is standard competition ranking ("1224"): customers with equal scores share a rank,
which is 1 + the number of eligible customers with a strictly higher score, and the next
distinct score's rank skips the tied places. Within a tie the list is ordered by customer_id
(ascending), so a page is the same on every call.
"""

from __future__ import annotations

from typing import Any

TOP_SQL = """
SELECT customer_id, score FROM leaderboard_scores
WHERE board_id = %(board)s AND period_start = %(period)s AND eligible
ORDER BY score DESC, customer_id LIMIT %(limit)s
"""
# leaderboard_rank sums the eligible customers per score bucket above the customer's, at four
# nested levels (migration 0009_leaderboard_buckets): a few hundred rows, not one per score
RANK_SQL = """
SELECT s.score, leaderboard_rank(s.board_id, s.period_start, s.score) AS rank
FROM leaderboard_scores s
WHERE s.board_id = %(board)s AND s.period_start = %(period)s AND s.customer_id = %(customer)s
  AND s.eligible
"""


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The top rows (score descending, then customer_id) with competition ranks."""
    out: list[dict[str, Any]] = []
    for position, row in enumerate(rows, start=1):
        tied = out and out[-1]["score"] == row["score"]
        out.append({"rank": out[-1]["rank"] if tied else position, **row})
    return out
