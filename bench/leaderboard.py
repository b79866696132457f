"""Leaderboard latency on a board of 1M customers: p50/p99 of GET /leaderboards/{id} (top 10 and
top 100) and GET /leaderboards/{id}/customers/{cid} (random customers), through the real app and
its pooled PgLookup.

Seeds a fresh database (DATABASE_URL's server, migrated to every head) with `--customers`
leaderboard_scores rows (default 1M) in one INSERT, so the score buckets are the ones the
migration's statement-level trigger keeps for the sink: integer scores with a long tail (many
ties low down, about 14k distinct values), 2% left out (not eligible). `--before` also builds
0007_leaderboards' per-score counts (with one GROUP BY) and times that revision's rank query
(one count row per distinct higher score) on the same data, through the same app.
Target: p99 < 50 ms per endpoint.

Then the sink's side: `--batches` statements shaped as the sink's score upsert (500 random
customers' deltas, INSERT ... ON CONFLICT DO UPDATE) through the buckets' statement-level
triggers, and with `--before` alternately through 0007's per-row trigger (installed at the end).

    python -m bench.leaderboard [--customers N] [--repeat R] [--before] [--keep]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import psycopg
from fastapi.testclient import TestClient

from bench._common import fresh_database
from bench.history import TARGET_MS, _NoProducer, report, timed
from ingest import leaderboards as lb
from ingest.app import create_app
from ingest.config import IngestConfig
from ingest.lookup import PgLookup
from ingest.programs import StaticPrograms
from schemas.program import Program
from schemas.settings import Settings, libpq_url
from sinks.migrate import upgrade

PROGRAM = Program.model_validate(
    {"leaderboards": [{"id": "points", "metric": {"kind": "points"}, "period": "all_time"}]}
)
SEED = """
INSERT INTO leaderboard_scores (board_id, period_start, customer_id, score, eligible, updated_at)
SELECT 'points', DATE '1970-01-01', 'c' || g, floor(-ln(1 - random()) * 2000), g %% 50 <> 0, now()
FROM generate_series(0, %(c)s - 1) g
"""
BEFORE = "customer rank (0007)"
# 0007_leaderboards: a count per distinct score, and a rank summing those above
BEFORE_COUNTS = """
CREATE TABLE leaderboard_score_counts AS
SELECT board_id, period_start, score, count(*) AS n FROM leaderboard_scores WHERE eligible GROUP BY 1, 2, 3;
ALTER TABLE leaderboard_score_counts ADD PRIMARY KEY (board_id, period_start, score)
"""
BEFORE_RANK_SQL = """
SELECT s.score, 1 + COALESCE((
    SELECT sum(k.n) FROM leaderboard_score_counts k
    WHERE k.board_id = s.board_id AND k.period_start = s.period_start AND k.score > s.score
), 0)::bigint AS rank
FROM leaderboard_scores s
WHERE s.board_id = %(board)s AND s.period_start = %(period)s AND s.customer_id = %(customer)s
  AND s.eligible
"""


def seed(url: str, customers: int, before: bool) -> None:
    began = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT setseed(0.15)")
        conn.execute(SEED, {"c": customers})
        took = time.monotonic() - began
        conn.execute("VACUUM (ANALYZE) leaderboard_scores, leaderboard_score_buckets")
        levels = conn.execute("SELECT level, count(*) FROM leaderboard_score_buckets GROUP BY 1 ORDER BY 1")
        buckets = ", ".join(f"level {level}: {n:,}" for level, n in levels.fetchall())
        if before:
            conn.execute(BEFORE_COUNTS)
            conn.execute("VACUUM (ANALYZE) leaderboard_score_counts")
    print(f"seeded {customers:,} scores in {took:.0f}s (buckets {buckets}; level 4 = distinct scores)",
          flush=True)  # fmt: skip


def measure(client: TestClient, customers: int, repeat: int, before: bool) -> dict[str, list[float]]:
    rng = random.Random(15)
    took: dict[str, list[float]] = {}
    for _ in range(repeat):
        cid = f"c{rng.randrange(customers)}"
        if int(cid[1:]) % 50 == 0:  # left out: a 404 is not the case measured
            cid = f"c{int(cid[1:]) + 1}"
        for name, path, params in (
            ("top 10", "/leaderboards/points", {}),
            ("top 100", "/leaderboards/points", {"limit": 100}),
            ("customer rank", f"/leaderboards/points/customers/{cid}", {}),
        ):
            took.setdefault(name, []).append(timed(client, path, params)[0])
        if before:
            now, lb.RANK_SQL = lb.RANK_SQL, BEFORE_RANK_SQL
            try:
                took.setdefault(BEFORE, []).append(timed(client, path, params)[0])
            finally:
                lb.RANK_SQL = now
    return took


# the sink's statement for a batch's scores (sinks/tables.py LEADERBOARD_SCORES, eligibility aside)
BATCH = """
INSERT INTO leaderboard_scores AS l (board_id, period_start, customer_id, score, eligible, updated_at)
SELECT 'points', DATE '1970-01-01', c, d, true, now() FROM unnest(%s::text[], %s::float8[]) u(c, d)
ON CONFLICT (board_id, period_start, customer_id) DO UPDATE SET score = l.score + EXCLUDED.score
"""
# 0007's per-row trigger beside the buckets' statement-level ones; each batch enables one kind
BEFORE_TRIGGER = """
CREATE FUNCTION leaderboard_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.eligible = NEW.eligible AND OLD.score = NEW.score THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.eligible THEN
        UPDATE leaderboard_score_counts SET n = n - 1
        WHERE board_id = OLD.board_id AND period_start = OLD.period_start AND score = OLD.score;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.eligible THEN
        INSERT INTO leaderboard_score_counts AS k VALUES (NEW.board_id, NEW.period_start, NEW.score, 1)
        ON CONFLICT (board_id, period_start, score) DO UPDATE SET n = k.n + 1;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER leaderboard_scores_count AFTER INSERT OR UPDATE OR DELETE ON leaderboard_scores
    FOR EACH ROW EXECUTE FUNCTION leaderboard_count();
"""
ONLY = {
    "statement-level buckets": "ALTER TABLE leaderboard_scores ENABLE TRIGGER leaderboard_scores_insert, "
    "ENABLE TRIGGER leaderboard_scores_update, DISABLE TRIGGER leaderboard_scores_count",
    "0007 per-row trigger": "ALTER TABLE leaderboard_scores DISABLE TRIGGER leaderboard_scores_insert, "
    "DISABLE TRIGGER leaderboard_scores_update, ENABLE TRIGGER leaderboard_scores_count",
}


def sink_batches(url: str, customers: int, batches: int, before: bool) -> None:
    """ms per upsert of 500 customers' score deltas (a transaction each); with `before`, the
    batches alternate between the buckets' triggers and 0007's (the same cache for both)."""
    rng = random.Random(16)
    kinds = list(ONLY) if before else list(ONLY)[:1]
    took: dict[str, list[float]] = {kind: [] for kind in kinds}
    with psycopg.connect(url, autocommit=True) as conn:
        if before:
            conn.execute(BEFORE_TRIGGER)
        for _ in range(batches):
            for kind in kinds:
                if before:
                    conn.execute(ONLY[kind])
                ids = list(dict.fromkeys(f"c{rng.randrange(customers)}" for _ in range(500)))
                deltas = [float(rng.randrange(1, 200)) for _ in ids]
                began = time.perf_counter()
                conn.execute(BATCH, (ids, deltas))
                took[kind].append((time.perf_counter() - began) * 1000)
    for kind, values in took.items():
        print(f"sink batch of 500 scores, {kind}: p50 {statistics.median(values):.1f} ms, "
              f"mean {statistics.mean(values):.1f} ms ({batches} batches)", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--before", action="store_true", help="also time 0007's rank query")
    parser.add_argument("--batches", type=int, default=40, help="sink-shaped score upserts to time")
    parser.add_argument("--keep", action="store_true", help="keep the seeded database")
    args = parser.parse_args(argv)
    server = Settings.from_env().database_url
    url = fresh_database(server, "bench_history")
    upgrade(url)
    try:
        seed(url, args.customers, args.before)
        app = create_app(Settings(), IngestConfig(api_keys={"k": frozenset({"ingest"})}),
                         programs=StaticPrograms(PROGRAM), producer=_NoProducer(),
                         lookup=PgLookup(url), publisher=lambda p: 0)  # fmt: skip
        with TestClient(app) as client:
            measure(client, args.customers, 20, args.before)  # warm the pool and PostgreSQL's caches
            took = measure(client, args.customers, args.repeat, args.before)
            report(took)
            ok = all(statistics.quantiles(v, n=100)[98] < TARGET_MS for k, v in took.items() if k != BEFORE)
        sink_batches(url, args.customers, args.batches, args.before)
    finally:
        if not args.keep:
            with psycopg.connect(libpq_url(server), autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
