"""`loyalty demo`: send a small load to the running stack over HTTP and show every part work.

With examples/program.yaml (what `make up` applies) the load reaches each part of the product:
registrations and purchases (points, wallets, ledger), a purchase that redeems points, a
golden-ticket coupon that lifts a customer to gold (tier change -> `vip` audience -> the
`vip-welcome` journey and its webhook), an ADD_TO_CART that starts the cart-abandonment journey
and a purchase that exits it, tracking-only page views, the `top-earners` leaderboard
(GET /leaderboards/top-earners), and badges: two purchases within 30 days earn `regular` (an
achievement), an order of 300 or more `high-roller` with the campaign's HIGH_ROLLER webhook
reaction (GET /customers/{id}/badges). INGEST_URL, API_KEY and DATABASE_URL
come from the environment or .local/stack.env. The demo waits (on conditions, with a deadline)
until PostgreSQL shows every part, then prints a summary read from the sink's tables, so a
newcomer sees each part work, or which one did not (exit 1). References are fixed, so running
it again applies nothing twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from deploy.local.paths import local_dir

T = TypeVar("T")
Request = tuple[str, dict[str, Any]]  # (path, body)

CUSTOMERS = ("demo-alice", "demo-bob", "demo-carol", "demo-dave")
PURCHASES = (("demo-alice", "order-1", 125.0), ("demo-alice", "order-2", 40.0))
PURCHASES += (("demo-bob", "order-1", 310.0),)
CART_CUSTOMER = "demo-dave"  # enters cart-abandonment, then buys: the journey exits


def stack_env(path: Path | None = None) -> dict[str, str]:
    """`.local/stack.env` overlaid with the process environment."""
    path = path or local_dir() / "stack.env"
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
    keys = ("INGEST_URL", "API_KEY", "DATABASE_URL", "DASHBOARD_URL")
    return values | {k: os.environ[k] for k in keys if os.environ.get(k)}


def event(customer: str, type_: str, reference: str, **fields: Any) -> Request:
    return "/behavior/events", {"customer_id": customer, "type": type_, "reference": reference, **fields}


def demo_requests() -> list[Request]:
    """(path, body) of every request sent before the cart journey's exit, in order."""
    reqs: list[Request] = [
        ("/customers", {"customer_id": c, "reference": "signup", "customer": {"name": c[5:].title()}})
        for c in ("demo-alice", "demo-carol")
    ]
    reqs += [event(c, "PURCHASE", ref, properties={"amount": amount}) for c, ref, amount in PURCHASES]
    # bob spends 100 of the points his first order earned (same customer: applied in order)
    redeem = [{"reward_id": "POINTS", "amount": 100}]
    reqs.append(event("demo-bob", "PURCHASE", "order-2", properties={"amount": 20}, redeem=redeem))
    # 10 000 points at once: carol goes to gold, enters `vip` and gets the vip-welcome webhook
    reqs.append(event("demo-carol", "COUPON_USE", "golden-ticket", coupon_code="GOLDEN-1"))
    reqs.append(event(CART_CUSTOMER, "ADD_TO_CART", "cart-1", properties={"sku": "grinder", "price": 89}))
    for i, customer in enumerate(CUSTOMERS[:2] * 2):
        reqs.append(event(customer, "PAGE_VIEW", f"view-{i}", properties={"url": f"/products/{i}"}))
    return reqs


def checkout_request() -> Request:
    """The purchase that takes the cart customer out of cart-abandonment (an exit event)."""
    props = {"amount": 89, "category": "electronics"}
    return event(CART_CUSTOMER, "PURCHASE", "order-1", properties=props)


def send(client: httpx.Client, reqs: list[Request]) -> tuple[list[str], list[str]]:
    """POST each request; returns (accepted event ids, rejection messages)."""
    accepted, rejected = [], []
    for path, body in reqs:
        resp = client.post(path, json=body)
        if resp.status_code in (200, 202):
            accepted.append(resp.json()["data"]["id"])
        else:
            rejected.append(f"{body.get('type', 'REGISTRATION')} -> {resp.status_code} {resp.text}")
    return accepted, rejected


def poll(check: Callable[[], T], until: Callable[[T], bool], deadline: float) -> T:
    """Call `check` until `until(value)` holds or the deadline passes; the last value."""
    while True:
        value = check()
        if until(value) or time.monotonic() >= deadline:
            return value
        time.sleep(0.5)


def query(database_url: str, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
    """Rows of `sql`; none while the database (or a table) is not there yet."""
    import psycopg

    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()
    except psycopg.Error:
        return []


def cart_journey_started(database_url: str, deadline: float) -> bool:
    """Wait until the sink shows the cart customer in cart-abandonment, so the exit purchase
    comes after the entry (they travel on different topics)."""
    sql = "SELECT 1 FROM journey_instances WHERE customer_id = %(c)s AND journey_id = 'cart-abandonment'"
    return bool(poll(lambda: query(database_url, sql, {"c": CART_CUSTOMER}), bool, deadline))


@dataclass(frozen=True)
class Part:
    """One part of the product as the sink's tables show it for the demo customers."""

    name: str
    count: str  # SQL giving one number; the part worked when it is > 0
    detail: str = ""  # SQL giving (label, count) rows, shown next to the number
    want: int = 1  # the part worked when its number reaches this


_MINE = "customer_id = ANY(%(customers)s)"
PARTS = (
    Part(
        "events processed",
        f"SELECT count(*) FROM events WHERE id = ANY(%(ids)s) AND status <> 'PENDING' AND {_MINE}",
        f"SELECT status, count(*) FROM events WHERE id = ANY(%(ids)s) AND {_MINE} GROUP BY 1 ORDER BY 1",
    ),
    Part("wallets", f"SELECT count(*) FROM wallets WHERE {_MINE}"),
    Part("customers", f"SELECT count(*) FROM customers WHERE {_MINE}"),
    Part(
        "ledger lines",
        f"SELECT count(*) FROM ledger_lines WHERE {_MINE}",
        f"SELECT kind, count(*) FROM ledger_lines WHERE {_MINE} GROUP BY 1 ORDER BY 1",
    ),
    Part("redemptions", f"SELECT count(*) FROM ledger_lines WHERE kind = 'REDEMPTION' AND {_MINE}"),
    Part(
        "tier changes",
        f"SELECT count(*) FROM tier_changes WHERE coalesce(from_tier, '') <> to_tier AND {_MINE}",
        "SELECT customer_id || ' ' || coalesce(from_tier, '-') || '->' || to_tier, count(*) "
        f"FROM tier_changes WHERE {_MINE} GROUP BY 1 ORDER BY 1",
    ),
    Part(
        "audience members",
        f"SELECT count(*) FROM audience_members WHERE {_MINE}",
        f"SELECT audience_id, count(*) FROM audience_members WHERE {_MINE} GROUP BY 1 ORDER BY 1",
    ),
    Part(
        "journeys entered",
        f"SELECT count(*) FROM journey_instances WHERE {_MINE}",
        "SELECT journey_id || ' ' || status, count(*) FROM journey_instances "
        f"WHERE {_MINE} GROUP BY 1 ORDER BY 1",
    ),
    Part(  # both example journeys: cart-abandonment exits, vip-welcome completes
        "journeys ended",
        "SELECT count(DISTINCT journey_id) FROM journey_instances "
        f"WHERE status IN ('EXITED', 'COMPLETED') AND {_MINE}",
        want=2,
    ),
    Part(  # the example program's monthly points board (sink: leaderboard_scores)
        "leaderboard",
        f"SELECT count(*) FROM leaderboard_scores WHERE board_id = 'top-earners' AND eligible AND {_MINE}",
        "SELECT customer_id || ' ' || score, 1 FROM leaderboard_scores WHERE board_id = 'top-earners' "
        f"AND eligible AND {_MINE} ORDER BY score DESC, customer_id LIMIT 3",
    ),
    Part(
        "notifications",
        f"SELECT count(*) FROM notifications WHERE {_MINE}",
        f"SELECT event, count(*) FROM notifications WHERE {_MINE} GROUP BY 1 ORDER BY 1",
    ),
    Part(  # alice and bob: `regular` (the achievement), bob: `high-roller` (the campaign)
        "badges",
        f"SELECT count(*) FROM customer_badges WHERE count > 0 AND {_MINE}",
        f"SELECT customer_id || ' ' || badge_id, count(*) FROM customer_badges WHERE count > 0 AND {_MINE} "
        "GROUP BY 1 ORDER BY 1",
        want=3,
    ),
    Part(  # the high-roller campaign's webhook reaction, delivered to the demo receiver
        "webhook reactions",
        f"SELECT count(*) FROM webhook_deliveries WHERE outcome = 'DELIVERED' AND event = 'HIGH_ROLLER' "
        f"AND {_MINE}",
    ),
    Part(
        "webhooks delivered",
        f"SELECT count(*) FROM webhook_deliveries WHERE outcome = 'DELIVERED' AND {_MINE}",
        f"SELECT event, count(*) FROM webhook_deliveries WHERE outcome = 'DELIVERED' AND {_MINE} "
        "GROUP BY 1 ORDER BY 1",
    ),
)


def counts(database_url: str, ids: list[str]) -> dict[str, int]:
    """Each part's number, read from PostgreSQL now."""
    params = {"ids": ids, "customers": list(CUSTOMERS)}
    out = {}
    for part in PARTS:
        found = query(database_url, part.count, params)
        out[part.name] = found[0][0] if found else 0
    return out


def complete(found: dict[str, int], ids: list[str]) -> bool:
    """Every part shows, and every accepted event has its final status."""
    return all(found[p.name] >= p.want for p in PARTS) and found["events processed"] >= len(ids)


def details(database_url: str, ids: list[str]) -> dict[str, str]:
    params = {"ids": ids, "customers": list(CUSTOMERS)}
    rows = {p.name: query(database_url, p.detail, params) if p.detail else [] for p in PARTS}
    return {name: ", ".join(f"{label} {n}" for label, n in found) for name, found in rows.items()}


def table_counts(database_url: str) -> dict[str, int]:
    tables = query(database_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    return {t: query(database_url, f'SELECT count(*) FROM "{t}"')[0][0] for (t,) in tables}


def webhooks(path: Path) -> Counter[str]:
    """Webhooks the demo receiver got, by event type."""
    counts: Counter[str] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            body = json.loads(line).get("body")
            counts[body.get("event", "?") if isinstance(body, dict) else "?"] += 1
    return counts


def print_leaderboard(client: httpx.Client, board_id: str) -> None:
    """The board's top 5 as GET /leaderboards/{id} serves it."""
    resp = client.get(f"/leaderboards/{board_id}", params={"limit": 5})
    if resp.status_code != 200:
        print(f"leaderboard {board_id}: {resp.status_code} {resp.text}")
        return
    data = resp.json()["data"]
    ranks = ", ".join(f"#{e['rank']} {e['customer_id']} {e['score']:g}" for e in data["entries"])
    print(f"leaderboard {board_id} ({data['period']} from {data['period_start']}): {ranks or 'empty'}")


def print_dry_run(client: httpx.Client, customer: str, amount: float) -> None:
    """What a purchase would earn, asked of the partition that owns the customer
    (?dry_run=true), and the wallet read again to show that nothing changed."""
    before = client.get(f"/customers/{customer}/wallet").json().get("data", {}).get("points")
    body = {"customer_id": customer, "type": "PURCHASE", "properties": {"amount": amount}}
    resp = client.post("/behavior/events", params={"dry_run": "true"}, json=body)
    if resp.status_code != 200:
        print(f"dry run {customer}: {resp.status_code} {resp.text}")
        return
    data = resp.json()["data"]
    rules = ", ".join(r["campaign_id"] for r in data.get("rules_applied") or []) or "none"
    after = client.get(f"/customers/{customer}/wallet").json().get("data", {}).get("points")
    print(f"dry run {customer}: a {amount:g} purchase would earn {data.get('points')} points "
          f"(rules {rules}); points still {after} (were {before})")  # fmt: skip


def print_summary(database_url: str, ids: list[str], found: dict[str, int], timeout: float) -> None:
    print("summary (PostgreSQL, the demo customers):")
    info = details(database_url, ids)
    want = {p.name: p.want for p in PARTS}
    for name, count in found.items():
        mark = "ok" if count >= want[name] else "MISSING"
        print(f"  {mark:<8} {name:<20} {count:>4}  {info.get(name, '')}".rstrip())
    missing = [name for name, count in found.items() if count < want[name]]
    if found["events processed"] < len(ids):
        missing.append(f"{len(ids) - found['events processed']} events without a final status")
    if missing:
        print(f"not shown within {timeout:.0f}s: {', '.join(missing)} (see .local/logs/sink.log)")
    else:
        print("every part worked")


def run(client: httpx.Client, database_url: str | None, timeout: float) -> tuple[bool, list[str]]:
    """Send the load and wait for it; (every part shown, accepted ids)."""
    deadline = time.monotonic() + timeout
    accepted, rejected = send(client, demo_requests())
    if database_url and not cart_journey_started(database_url, time.monotonic() + timeout / 2):
        print(f"journey: {CART_CUSTOMER} not in cart-abandonment in PostgreSQL yet; buying anyway")
    more, refused = send(client, [checkout_request()])
    accepted, rejected = accepted + more, rejected + refused
    print(f"events accepted: {len(accepted)}, rejected: {len(rejected)}")
    for line in rejected:
        print(f"  rejected {line}")
    if not database_url:
        return False, accepted
    found = poll(lambda: counts(database_url, accepted), lambda f: complete(f, accepted), deadline)
    print(f"events in PostgreSQL: {found['events processed']} of {len(accepted)}")
    for customer in CUSTOMERS:
        resp = client.get(f"/customers/{customer}/wallet")
        data = resp.json().get("data", {}) if resp.status_code == 200 else {}
        print(f"points {customer}: {data.get('points', 'no wallet yet')} (tier {data.get('tier')})")
    for customer in CUSTOMERS:
        resp = client.get(f"/customers/{customer}/badges")
        held = [b["badge_name"] for b in resp.json().get("data", [])] if resp.status_code == 200 else []
        print(f"badges {customer}: {', '.join(held) or 'none'}")
    print_leaderboard(client, "top-earners")
    print_dry_run(client, "demo-alice", 100)
    hooks = webhooks(local_dir() / "receiver.jsonl")
    print(f"webhooks received by the demo receiver: {sum(hooks.values())} {dict(sorted(hooks.items()))}")
    print_summary(database_url, accepted, found, timeout)
    return complete(found, accepted) and not rejected, accepted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loyalty demo", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for every part")
    args = parser.parse_args(argv)
    env = stack_env()
    if "INGEST_URL" not in env:
        print("demo: no INGEST_URL (run `make up` first)", file=sys.stderr)
        return 1
    headers = {"X-API-Key": env.get("API_KEY", "dev-key")}
    with httpx.Client(base_url=env["INGEST_URL"], headers=headers, timeout=10) as client:
        ok, _ = run(client, env.get("DATABASE_URL"), args.timeout)
    if env.get("DATABASE_URL"):
        for table, count in table_counts(env["DATABASE_URL"]).items():
            print(f"  table {table:<28} {count} rows")
    if env.get("DASHBOARD_URL"):
        print(f"dashboard: {env['DASHBOARD_URL']} (sign in with an admin key: API_KEY in .local/stack.env)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
