"""Customer history latency on large sink tables: p50/p99 of GET /customers/{id}, /events (first
page, next page, filtered), /ledger and /tiers, through the real app and its pooled PgLookup.

Seeds a fresh database (on DATABASE_URL's server, migrated to every head) with generate_series:
`--events` events (default 1M; `--events 10000000` for the issue's 10M figure) over
`--customers` customers (default events/100), one ledger line per event, two tier changes and a
profile and wallet per customer. Target: p99 < 50 ms per endpoint.

    python -m bench.history [--events N] [--customers N] [--repeat R] [--keep]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import psycopg
from fastapi.testclient import TestClient

from bench._common import fresh_database
from ingest.app import create_app
from ingest.config import IngestConfig
from ingest.lookup import PgLookup
from ingest.programs import StaticPrograms
from schemas.program import Program
from schemas.settings import Settings, libpq_url
from sinks.migrate import upgrade

TARGET_MS = 50.0
SEED = """
INSERT INTO events (id, customer_id, type, kind, path, reference, status, points, result,
                    properties, issued_at, received_at, processed_at, config_version)
SELECT 'e' || g, 'c' || (g %% %(c)s), (ARRAY['PURCHASE','REVIEW','APP_OPEN','REGISTRATION'])[1 + g %% 4],
       'EVENT', 'loyalty', 'r' || g, (ARRAY['RESOLVED','RESOLVED','RESOLVED','FAILED'])[1 + (g / 7) %% 4],
       g %% 50, jsonb_build_object('status', 'RESOLVED', 'points', g %% 50, 'rules_applied', '[]'::jsonb),
       jsonb_build_object('amount', g %% 500), now() - g * interval '1 second',
       now() - g * interval '1 second', now() - g * interval '1 second', 1
FROM generate_series(1, %(n)s) g;
INSERT INTO ledger_lines (id, customer_id, event_id, kind, reward_id, campaign_id, rule, amount,
                          issued_at, expiration_date, processed_at, line)
SELECT 'e' || g || ':ACCUMULATION:0', 'c' || (g %% %(c)s), 'e' || g,
       (ARRAY['ACCUMULATION','ACCUMULATION','REDEMPTION','ADJUSTMENT'])[1 + g %% 4], 'POINTS',
       'spend', 'properties.amount > 0', g %% 50, now() - g * interval '1 second',
       now() + interval '365 days', now() - g * interval '1 second',
       jsonb_build_object('id', 'e' || g || ':ACCUMULATION:0', 'amount', g %% 50, 'reason', 'bench')
FROM generate_series(1, %(n)s) g;
INSERT INTO tier_changes (id, customer_id, direction, from_tier, to_tier, changed_at, data)
SELECT 't' || g, 'c' || (g %% %(c)s), 'UPGRADE', 'bronze', 'silver', now() - g * interval '1 minute',
       jsonb_build_object('triggered_by', 'EVENT', 'trigger_event_id', 'e' || g)
FROM generate_series(1, 2 * %(c)s) g;
INSERT INTO customers (customer_id, anonymous, identified, tier, event_count, lifetime_points,
                       points, profile, updated_at)
SELECT 'c' || g, false, true, 'silver', 100, 1000, 500, '{"period_points": 10}', now()
FROM generate_series(0, %(c)s - 1) g;
INSERT INTO wallets (customer_id, points, lifetime, pending, balance, wallet, tier, updated_at)
SELECT 'c' || g, 500, 1000, 0, '{"POINTS": 500}', '{"reserved": {}, "totals": []}', 'silver', now()
FROM generate_series(0, %(c)s - 1) g;
"""


def seed(url: str, events: int, customers: int) -> None:
    began = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in filter(str.strip, SEED.split(";\n")):
            conn.execute(statement, {"n": events, "c": customers})
        conn.execute("VACUUM (ANALYZE) events, ledger_lines, tier_changes, customers, wallets")
    print(f"seeded {events:,} events, {customers:,} customers in {time.monotonic() - began:.0f}s", flush=True)


def timed(client: TestClient, path: str, params: dict) -> tuple[float, dict]:
    began = time.perf_counter()
    resp = client.get(path, params=params, headers={"X-API-Key": "k"})
    took = (time.perf_counter() - began) * 1000
    resp.raise_for_status()
    return took, resp.json()


def measure(client: TestClient, customers: int, repeat: int) -> dict[str, list[float]]:
    rng = random.Random(7)
    took: dict[str, list[float]] = {}
    for _ in range(repeat):
        c = f"/customers/c{rng.randrange(customers)}"
        _, first = timed(client, f"{c}/events", {})  # (the first page is timed below)
        for name, path, params in (
            ("GET /customers/{id}", c, {}),
            ("events, first page (50)", f"{c}/events", {}),
            ("events, next page", f"{c}/events", {"cursor": first["next_cursor"]}),
            ("events, type+status filter", f"{c}/events", {"type": "PURCHASE", "status": "RESOLVED"}),
            ("events, limit 500", f"{c}/events", {"limit": 500}),
            ("ledger, first page", f"{c}/ledger", {}),
            ("ledger, kind filter", f"{c}/ledger", {"kind": "ADJUSTMENT"}),
            ("tiers", f"{c}/tiers", {}),
        ):
            took.setdefault(name, []).append(timed(client, path, params)[0])
    return took


def report(took: dict[str, list[float]]) -> bool:
    ok = True
    print(f"{'endpoint':32} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in took.items():
        q = statistics.quantiles(values, n=100)
        ok &= q[98] < TARGET_MS
        print(f"{name:32} {statistics.median(values):8.2f} {q[98]:8.2f}", flush=True)
    print(f"target p99 < {TARGET_MS:g} ms: {'met' if ok else 'NOT met'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.history", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the seeded database")
    args = parser.parse_args(argv)
    customers = args.customers or max(1, args.events // 100)
    server = Settings.from_env().database_url
    url = fresh_database(server, "bench_history")
    upgrade(url)
    try:
        seed(url, args.events, customers)
        app = create_app(Settings(), IngestConfig(api_keys={"k": frozenset({"ingest"})}),
                         programs=StaticPrograms(Program()), producer=_NoProducer(),
                         lookup=PgLookup(url), publisher=lambda p: 0)  # fmt: skip
        with TestClient(app) as client:
            measure(client, customers, 20)  # warm the pool and PostgreSQL's caches
            ok = report(measure(client, customers, args.repeat))
    finally:
        if not args.keep:
            with psycopg.connect(libpq_url(server), autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    return 0 if ok else 1


class _NoProducer:
    """Reads only: nothing is produced."""

    async def send(self, topic: str, key: str, value: bytes):
        raise RuntimeError("the history benchmark produces nothing")

    async def send_many(self, messages):
        raise RuntimeError("the history benchmark produces nothing")


if __name__ == "__main__":
    raise SystemExit(main())
