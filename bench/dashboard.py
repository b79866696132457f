"""Dashboard page data latency on large tables: p50/p95 of GET /api/<page>?range= per page and range.

Seeds a fresh database (on DATABASE_URL's server) with dashboard.seed's generate_series load,
default 1M events / 100k customers over 90 days (`--events 10000000 --customers 1000000` for the
issue's 10M / 1M figure), runs the real service (uvicorn, cache off) and times each request over
HTTP. Target: p95 < 300 ms. The rollups (dashboard.rollups) are built once before timing, and
their rebuild times are printed: the background cost of keeping them.

    python -m bench.dashboard [--events N] [--customers N] [--days D] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import httpx
import psycopg

from dashboard import rollups
from dashboard.config import DashboardConfig
from dashboard.ranges import RANGES
from dashboard.seed import Load, fresh_database, seed

PAGES = ("overview", "campaigns", "tiers", "audiences", "journeys", "webhooks", "segments")
KEY = "bench-key"
TARGET_MS = 300.0


def serve(url: str) -> tuple[str, object]:
    import uvicorn

    from dashboard.app import create_app

    config = DashboardConfig(database_url=url, admin_keys=(KEY,), cache_s=0, pool_max=2, rollups=False)
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("dashboard did not start")
        if time.monotonic() > deadline:
            raise TimeoutError("dashboard did not start in 60 s")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server


def time_page(client: httpx.Client, path: str, repeat: int) -> list[float]:
    client.get(path).raise_for_status()  # warm the pool and the caches of PostgreSQL
    took = []
    for _ in range(repeat):
        began = time.perf_counter()
        client.get(path).raise_for_status()
        took.append((time.perf_counter() - began) * 1000)
    return took


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def rebuild_figures(conn: psycopg.Connection) -> None:
    """What the rollups cost: a full rebuild (on start) and the every-minute rebuild of 3 days."""
    for label, run in (
        ("rollups full rebuild", lambda: rollups.refresh_hours(conn, full=True)),
        ("rollups 3-day rebuild (every minute)", lambda: rollups.refresh_hours(conn)),
        ("segment snapshot first fill", lambda: rollups.refresh_segments(conn)),
        ("segment snapshot refresh (every 5 min)", lambda: rollups.refresh_segments(conn)),
    ):
        began = time.monotonic()
        run()
        print(f"{label}: {time.monotonic() - began:.1f}s", flush=True)
    conn.execute("VACUUM (ANALYZE) dashboard_event_hours, dashboard_ledger_hours, dashboard_skip_hours")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=90.0)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    server_url = os.environ.get("DATABASE_URL", "postgresql://localhost/loyalty")
    gap_s = args.days * 86400 / args.events
    load = Load(args.customers, args.events, gap_s, webhooks=args.events // 10)
    with fresh_database(server_url, "dashbench") as url:
        began = time.monotonic()
        with psycopg.connect(url, autocommit=True) as conn:
            seed(conn, load)
            conn.execute("VACUUM (ANALYZE)")  # index-only scans need the visibility map
            print(f"seeded {load} in {time.monotonic() - began:.0f}s", flush=True)
            rebuild_figures(conn)
        base, server = serve(url)
        slow = []
        try:
            with httpx.Client(base_url=base, headers={"x-api-key": KEY}, timeout=60) as client:
                print(f"{'page':<12}{'range':>6}{'p50 ms':>9}{'p95 ms':>9}", flush=True)
                for page in (*PAGES, "customers/c42"):
                    for name in RANGES:
                        took = time_page(client, f"/api/{page}?range={name}", args.repeat)
                        line = f"{page:<12}{name:>6}{statistics.median(took):>9.1f}{p95(took):>9.1f}"
                        print(line, flush=True)
                        if p95(took) >= TARGET_MS:
                            slow.append(f"{page} {name}")
        finally:
            server.should_exit = True
    print(f"p95 >= {TARGET_MS:.0f} ms: {', '.join(slow) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
