"""Leaderboard latency on a board of 1M customers: p50/p99 of GET /leaderboards/{id} (top 10 and
top 100) and GET /leaderboards/{id}/customers/{cid} (random customers, so most ranks sum the
counts of many higher scores), through the real app and its pooled PgLookup.

Seeds a fresh database (DATABASE_URL's server, migrated to every head) with `--customers`
leaderboard_scores rows (default 1M) through the migration's trigger, so the per-score counts
are the ones the sink keeps: integer scores with a long tail (many ties low down, about 20k
distinct values), 2% left out (not eligible). Target: p99 < 50 ms per endpoint.

    python -m bench.leaderboard [--customers N] [--repeat R] [--keep]
"""

from __future__ import annotations

import argparse
import random
import time

import psycopg
from fastapi.testclient import TestClient

from bench.history import _NoProducer, fresh_database, report, timed
from ingest.app import create_app
from ingest.config import IngestConfig
from ingest.lookup import PgLookup
from ingest.programs import StaticPrograms
from schemas.program import Program
from schemas.settings import Settings, libpq_url

PROGRAM = Program.model_validate(
    {"leaderboards": [{"id": "points", "metric": {"kind": "points"}, "period": "all_time"}]}
)
SEED = """
INSERT INTO leaderboard_scores (board_id, period_start, customer_id, score, eligible, updated_at)
SELECT 'points', DATE '1970-01-01', 'c' || g, floor(-ln(1 - random()) * 2000), g %% 50 <> 0, now()
FROM generate_series(0, %(c)s - 1) g
"""


def seed(url: str, customers: int) -> None:
    began = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT setseed(0.15)")
        conn.execute(SEED, {"c": customers})
        conn.execute("VACUUM (ANALYZE) leaderboard_scores, leaderboard_score_counts")
        (distinct,) = conn.execute("SELECT count(*) FROM leaderboard_score_counts").fetchone()
    took = time.monotonic() - began
    print(f"seeded {customers:,} scores ({distinct:,} distinct) in {took:.0f}s", flush=True)


def measure(client: TestClient, customers: int, repeat: int) -> dict[str, list[float]]:
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
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the seeded database")
    args = parser.parse_args(argv)
    server = Settings.from_env().database_url
    url = fresh_database(server)
    try:
        seed(url, args.customers)
        app = create_app(Settings(), IngestConfig(api_keys={"k": frozenset({"ingest"})}),
                         programs=StaticPrograms(PROGRAM), producer=_NoProducer(),
                         lookup=PgLookup(url), publisher=lambda p: 0)  # fmt: skip
        with TestClient(app) as client:
            measure(client, args.customers, 20)  # warm the pool and PostgreSQL's caches
            ok = report(measure(client, args.customers, args.repeat))
    finally:
        if not args.keep:
            with psycopg.connect(libpq_url(server), autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
