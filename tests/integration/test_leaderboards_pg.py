"""Leaderboards over the real sink tables: the loyalty engine's results for 40 customers
(purchases with tied amounts, a reversal, a debit adjustment, an anonymous big spender, a
customer refusing the leaderboards consent) written by the sink (its mapping, scoring and
writer, in several batches) into a migrated PostgreSQL, then read through GET /leaderboards.
The top 10 and every rank must equal what SQL computes straight from ledger_lines; ranks of scores
on and beside every bucket boundary of the rank counts (migration 0009_leaderboard_buckets) equal
SQL's rank() over leaderboard_scores through inserts, upserts, eligibility flips and deletes."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from ingest.app import create_app
from ingest.config import IngestConfig
from ingest.lookup import PgLookup
from ingest.programs import StaticPrograms
from schemas.program import Program
from schemas.settings import Settings
from sinks.batch import Batch
from sinks.mapping import Source
from sinks.writer import write_batch
from tests.integration.test_sink_every_kind import MINUTE, NOW, Pipeline
from tests.support.ingest_fakes import FakeProducer

pytestmark = pytest.mark.integration
H = {"X-API-Key": "k"}
PROGRAM = Program.model_validate(
    {
        "version": 1,
        "campaigns": [{"id": "base", "condition": "properties.amount > 0", "formula": "properties.amount"}],
        "audiences": [{"id": "big", "condition": "profile.total_spend >= 100"}],
        "leaderboards": [
            {"id": "points", "name": "Top earners", "metric": {"kind": "points"}, "period": "all_time"},
            {"id": "big-orders", "period": "all_time", "metric": {
                "kind": "event_count", "event_type": "PURCHASE", "condition": "properties.amount >= 50"}},
            {"id": "big-points", "metric": {"kind": "points"}, "period": "month", "audience": "big"},
        ],
    }
)  # fmt: skip
CUSTOMERS = [f"c{i:02d}" for i in range(40)]
# the eligible customers' ranking, computed from ledger_lines (what "points earned" means)
SQL_RANKS = """
WITH earned AS (
    SELECT l.customer_id, sum(l.amount) AS score FROM ledger_lines l
    LEFT JOIN customers c USING (customer_id)
    WHERE l.reward_id = 'POINTS' AND l.kind IN ('ACCUMULATION', 'ADJUSTMENT', 'REVERSAL')
      AND c.anonymous IS NOT TRUE AND c.identified IS NOT FALSE
      AND coalesce(c.consent->>'leaderboards', 'true') <> 'false'
    GROUP BY 1)
SELECT rank() OVER (ORDER BY score DESC) AS rank, customer_id, score FROM earned
ORDER BY score DESC, customer_id
"""


COUNTS_SQL = """
SELECT customer_id, count(*) FROM events WHERE type = 'PURCHASE' AND status = 'RESOLVED'
  AND (properties->>'amount')::float >= 50 AND customer_id LIKE 'c%%' GROUP BY 1
"""


def load(p: Pipeline) -> None:
    rng = random.Random(15)
    for c in CUSTOMERS:
        p.command(c, "REGISTER")
    for _ in range(160):
        p.send(rng.choice(CUSTOMERS), "PURCHASE", properties={"amount": rng.choice([10, 25, 40, 60, 80])})
        p.advance(MINUTE)
    refunded = p.send("c01", "PURCHASE", properties={"amount": 500})
    p.command("c01", "REVERSE", target=refunded)
    p.command("c02", "ADJUST", amount=-30, reward_id="POINTS", reason="correction")
    p.command("ghost", "REGISTER", anonymous=True)
    p.send("ghost", "PURCHASE", properties={"amount": 5000})
    p.send("private", "PURCHASE", properties={"amount": 4000})
    p.command("private", "CONSENT", purposes={"leaderboards": False})


@pytest.fixture(scope="module")
def client(sink_db: str) -> Iterator[TestClient]:
    pipeline = Pipeline(PROGRAM)
    load(pipeline)
    offsets: dict[str, int] = defaultdict(int)
    records = pipeline.records
    committed: dict[tuple[str, int], int] = {}
    with psycopg.connect(sink_db) as conn:
        for start in range(0, len(records), 97):  # several batches: scores add up across them
            batch = Batch()
            for topic, value in records[start : start + 97]:
                batch.add(value, Source(topic, 0, offsets[topic]), topic, PROGRAM)
                offsets[topic] += 1
            assert not write_batch(conn, batch, committed).rejects
            conn.commit()
            committed.update(batch.offsets)
    app = create_app(Settings(), IngestConfig(api_keys={"k": frozenset({"ingest"})}),
                     programs=StaticPrograms(PROGRAM), producer=FakeProducer(),
                     lookup=PgLookup(sink_db, timeout_s=2), publisher=lambda p: 0,
                     clock=lambda: NOW + 200 * MINUTE)  # fmt: skip
    with TestClient(app) as c:
        yield c


def get(client: TestClient, url: str, status: int = 200, **params) -> dict:
    resp = client.get(url, params=params, headers=H)
    assert resp.status_code == status, resp.text
    return resp.json()


def expected(sink_db: str) -> list[dict]:
    with psycopg.connect(sink_db) as conn:
        rows = conn.execute(SQL_RANKS).fetchall()
    return [{"rank": r, "customer_id": c, "score": s} for r, c, s in rows]


def test_top_10_matches_sql_over_ledger_lines(client: TestClient, sink_db: str) -> None:
    want = expected(sink_db)
    assert len(want) == 40  # ghost (anonymous) and private (consent) are left out
    scores = [e["score"] for e in want]
    assert len(set(scores)) < len(scores), "the load has ties"
    data = get(client, "/leaderboards/points", limit=10)["data"]
    assert data["entries"] == want[:10]
    assert (data["period"], data["period_start"], data["period_end"]) == ("all_time", "1970-01-01", None)
    assert get(client, "/leaderboards/points")["data"]["entries"] == want[:10]  # default limit 10
    assert get(client, "/leaderboards/points", limit=100)["data"]["entries"] == want


def test_every_customers_rank_matches_sql(client: TestClient, sink_db: str) -> None:
    for entry in expected(sink_db):
        data = get(client, f"/leaderboards/points/customers/{entry['customer_id']}")["data"]
        assert (data["rank"], data["score"]) == (entry["rank"], entry["score"]), entry
    c01 = get(client, "/leaderboards/points/customers/c01")["data"]["score"]
    with psycopg.connect(sink_db) as conn:
        (wallet,) = conn.execute("SELECT lifetime FROM wallets WHERE customer_id = 'c01'").fetchone()
    assert c01 == wallet  # the reversed 500 is taken back
    for left_out in ("ghost", "private", "nobody"):
        get(client, f"/leaderboards/points/customers/{left_out}", status=404)


def test_event_count_and_audience_boards(client: TestClient, sink_db: str) -> None:
    with psycopg.connect(sink_db) as conn:
        counts = dict(conn.execute(COUNTS_SQL).fetchall())
        members = conn.execute("SELECT customer_id FROM audience_members WHERE audience_id = 'big'")
        big = {c for (c,) in members}
    entries = get(client, "/leaderboards/big-orders", limit=100)["data"]["entries"]
    assert {e["customer_id"]: e["score"] for e in entries} == counts
    monthly = get(client, "/leaderboards/big-points", limit=100)["data"]
    assert monthly["period"] == "month" and monthly["period_start"].endswith("-01")
    assert {e["customer_id"] for e in monthly["entries"]} == big & set(CUSTOMERS) and big


def test_unknown_board_and_bad_limit(client: TestClient) -> None:
    assert "no leaderboard" in get(client, "/leaderboards/nope", status=404)["error"]["message"]
    get(client, "/leaderboards/nope/customers/c01", status=404)
    for bad in (0, 101, "ten"):
        body = get(client, "/leaderboards/points", status=422, limit=bad)
        assert "limit" in str(body["error"]), body


BOUNDARY_SQL = """
SELECT customer_id, score, rank() OVER (ORDER BY score DESC) AS rank FROM leaderboard_scores
WHERE board_id = 'bounds' AND eligible
"""
UPSERT = """
INSERT INTO leaderboard_scores AS l (board_id, period_start, customer_id, score, eligible)
SELECT 'bounds', DATE '1970-01-01', c, s, e FROM unnest(%s::text[], %s::float8[], %s::bool[]) u(c, s, e)
ON CONFLICT (board_id, period_start, customer_id) DO UPDATE
SET score = l.score + EXCLUDED.score, eligible = EXCLUDED.eligible
"""


def boundary_scores() -> list[float]:
    """Scores on, just below and just above the edges of buckets at every level (16, 22, 28
    bits of the key: 4, 10, 16 mantissa bits) and of powers of two, both signs, zeros."""
    out = [0.0, -0.0, 5e-324, -5e-324, 1e300, -1e300]
    for e in (-3, 0, 1, 10, 20, 40):
        for bits in (4, 10, 16):
            for j in (0, 1, 2**bits - 1):
                edge = 2.0**e * (1 + j / 2**bits)
                for x in (edge, math.nextafter(edge, 0), math.nextafter(edge, math.inf)):
                    out += [x, -x]
    return out


def bounds_ranks(conn: psycopg.Connection) -> tuple[dict[str, int], dict[str, int]]:
    want = {c: r for c, _, r in conn.execute(BOUNDARY_SQL).fetchall()}
    got = dict(conn.execute(
        "SELECT customer_id, leaderboard_rank(board_id, period_start, score) FROM leaderboard_scores "
        "WHERE board_id = 'bounds' AND eligible").fetchall())  # fmt: skip
    return got, want


def test_ranks_at_bucket_boundaries_match_sql(sink_db: str) -> None:
    rng = random.Random(9)
    scores = boundary_scores()
    scores += scores[:40]  # ties
    scores += [float(rng.randrange(-50, 5000)) for _ in range(300)]
    ids = [f"b{i}" for i in range(len(scores))]
    with psycopg.connect(sink_db, autocommit=True) as conn:
        conn.execute(UPSERT, (ids, scores, [i % 7 != 0 for i in range(len(ids))]))  # one statement
        got, want = bounds_ranks(conn)
        assert got == want and len(want) > 500
        for _ in range(5):  # the sink's statement: some scores move (across buckets), some flip
            some = rng.sample(ids, 120)
            deltas = [rng.choice([1.0, -1.0, 2.0**-20, 1000.0, -(2.0**30)]) for _ in some]
            conn.execute(UPSERT, (some, deltas, [rng.random() > 0.1 for _ in some]))
            got, want = bounds_ranks(conn)
            assert got == want
        conn.execute("UPDATE leaderboard_scores SET eligible = NOT eligible WHERE board_id = 'bounds' "
                     "AND customer_id LIKE 'b1%%'")  # fmt: skip
        conn.execute("DELETE FROM leaderboard_scores WHERE board_id = 'bounds' AND customer_id LIKE 'b2%%'")
        got, want = bounds_ranks(conn)
        assert got == want
        (empty,) = conn.execute("SELECT count(*) FROM leaderboard_score_buckets WHERE n <= 0").fetchone()
        assert empty == 0  # emptied buckets are deleted, so ranks never read them
        conn.execute("DELETE FROM leaderboard_scores WHERE board_id = 'bounds'")
        left = conn.execute("SELECT count(*) FROM leaderboard_score_buckets WHERE board_id = 'bounds'")
        assert left.fetchone() == (0,)
