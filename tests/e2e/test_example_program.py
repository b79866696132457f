"""The shipped examples/program.yaml on the whole stack: every sink table keeps up while a
customer waits in a journey (issue 11, item 1).

One ADD_TO_CART puts a customer into the cart-abandonment journey's 30-minute wait. Its
TRANSITION activity has no status, and the sink's batch failed a NOT NULL constraint on it again
and again, so no table moved until the wait ended. Here one customer waits while others
register, buy, redeem and reach gold; every table the sink writes must show their rows and
ingest's read endpoints must answer from them. A failure names each table that lags.

`loyalty demo` (what `make run` shows a newcomer) runs on the same stack afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from psycopg import sql

from deploy.local.paths import ROOT
from deploy.local.postgres import create_database
from plumbing.topic_admin import delete_topics
from schemas.codec import decode
from schemas.topics import JOURNEYS_ACTIVITY
from tests.support.promql import alert_rules, dashboard_exprs, metric_names

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "program.yaml"
KEEP_UP_S = 30.0  # generous for 2 busy cores: with a working sink all of it shows within ~5 s
Check = Callable[[psycopg.Connection], str | None]  # None: the table is up to date


def loyalty(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    if check:
        assert done.returncode == 0, f"loyalty {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, database_url: str) -> Iterator[dict[str, str]]:
    """`loyalty stack up` with the shipped program (its webhook follows ${RECEIVER_URL} to the
    stack's receiver) on the session broker, an own topic prefix and a fresh database."""
    db = create_database(database_url, f"e2e_{uuid.uuid4().hex[:8]}")
    home = ROOT / ".local" / f"test-example-{uuid.uuid4().hex[:8]}"
    home.mkdir(parents=True)
    prefix = f"x{uuid.uuid4().hex[:8]}."
    env = os.environ | {
        "LOYALTY_LOCAL_DIR": str(home),
        "LOYALTY_PORTS": "auto",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": db,
        "TOPIC_PREFIX": prefix,
        "TOPIC_PARTITIONS": os.environ.get("TEST_TOPIC_PARTITIONS", "3"),
    }
    env.pop("RECEIVER_URL", None)  # the stack sets its own
    try:
        loyalty(env, "stack", "up", "--program", str(EXAMPLE))
        lines = (home / "stack.env").read_text().splitlines()
        yield dict(line.split("=", 1) for line in lines if line) | {"LOYALTY_LOCAL_DIR": str(home)}
    finally:
        loyalty(env, "stack", "down", check=False)
        _print_logs(home)
        shutil.rmtree(home, ignore_errors=True)
        delete_topics(kafka_bootstrap, prefix)
        drop_database(database_url, db)


def drop_database(admin_url: str, url: str) -> None:
    """The shared server keeps no database per run (the stack is down by now)."""
    name = sql.Identifier(url.rsplit("/", 1)[1])
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def _print_logs(home: Path) -> None:
    """Service logs end up in the report of a failed test (pytest shows captured stdout)."""
    for log in sorted((home / "logs").glob("*.log")):
        print(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))


def post(client: httpx.Client, path: str, body: dict[str, Any], wait: bool = False) -> dict[str, Any]:
    """POST to ingest; the answer's data (with ?wait=true: the loyalty processor's result)."""
    resp = client.post(path, json=body, params={"wait": "true", "timeout": "20"} if wait else None)
    assert resp.status_code in (200, 202), f"{path} {body}: {resp.status_code} {resp.text}"
    if wait:
        assert resp.status_code == 200, f"no result within the wait: {resp.text}"
    return resp.json()["data"]


def wait_for_activity(stack: dict[str, str], customer: str, kind: str, timeout: float = 30.0) -> dict:
    """The first journeys.activity record of `kind` for `customer`, read from Kafka (not the
    sink, which is what is under test)."""
    topic = f"{stack['TOPIC_PREFIX']}{JOURNEYS_ACTIVITY}"
    config = {"bootstrap.servers": stack["KAFKA_BOOTSTRAP_SERVERS"], "group.id": "unused"}
    consumer = Consumer(config | {"enable.auto.commit": False})
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            value = decode(msg.value())
            if value["customer_id"] == customer and value["kind"] == kind:
                return value
        raise AssertionError(f"no {kind} journey activity for {customer} within {timeout}s")
    finally:
        consumer.close()


def rows(conn: psycopg.Connection, sql: str, *params: Any) -> list[tuple]:
    return conn.execute(sql, params).fetchall()


def expect(conn: psycopg.Connection, what: str, sql: str, *params: Any) -> str | None:
    """None when `sql` finds a row, else `what` (the missing row, for the failure message)."""
    return None if rows(conn, sql, *params) else what


def table_checks(ids: dict[str, str], who: dict[str, str], wallet: dict[str, Any]) -> dict[str, Check]:
    """Per sink table, a check that the rows of the events sent during the wait are there."""
    buyer, vip, waiter = who["buyer"], who["vip"], who["waiter"]

    def events(conn: psycopg.Connection) -> str | None:
        got = dict(rows(conn, "SELECT id, status FROM events WHERE id = ANY(%s)", list(ids.values())))
        want = {ids["register"]: "RESOLVED", ids["purchase"]: "RESOLVED", ids["redeem"]: "RESOLVED"}
        want |= {ids["view"]: "TRACKED", ids["cart"]: "TRACKED"}
        bad = {k: got.get(i) for k, i in ids.items() if i in want and got.get(i) != want[i]}
        if got.get(ids["coupon"]) in (None, "PENDING"):
            bad["coupon"] = got.get(ids["coupon"])
        return f"status by event: {bad}" if bad else None

    sql_notification = "SELECT 1 FROM notifications WHERE customer_id = %s AND event = %s"
    return {
        "events": events,
        "wallets": lambda c: expect(
            c, f"{buyer} with {wallet['points']} points (the processor's wallet)",
            "SELECT 1 FROM wallets WHERE customer_id = %s AND points = %s", buyer, wallet["points"],
        ),
        "customers": lambda c: expect(
            c, f"{buyer} and {vip} (gold)",
            "SELECT 1 FROM customers a, customers b WHERE a.customer_id = %s "
            "AND b.customer_id = %s AND b.tier = 'gold'", buyer, vip,
        ),
        "ledger_lines": lambda c: expect(
            c, f"{buyer}'s REDEMPTION line",
            "SELECT 1 FROM ledger_lines WHERE customer_id = %s AND kind = 'REDEMPTION' "
            "AND event_id = %s", buyer, ids["redeem"],
        ),
        "notifications": lambda c: expect(
            c, f"{buyer}'s CUSTOMER_REDEMPTION", sql_notification, buyer, "CUSTOMER_REDEMPTION"
        ) or expect(c, f"{vip}'s TIER_UPGRADE", sql_notification, vip, "TIER_UPGRADE"),
        "tier_changes": lambda c: expect(
            c, f"{vip} to gold",
            "SELECT 1 FROM tier_changes WHERE customer_id = %s AND to_tier = 'gold'", vip,
        ),
        "audience_members": lambda c: expect(
            c, f"{buyer} in purchasers, {vip} in vip",
            "SELECT 1 FROM audience_members a, audience_members b WHERE a.customer_id = %s "
            "AND a.audience_id = 'purchasers' AND b.customer_id = %s AND b.audience_id = 'vip'",
            buyer, vip,
        ),
        "audience_membership_events": lambda c: expect(
            c, f"{vip}'s ENTER vip",
            "SELECT 1 FROM audience_membership_events WHERE customer_id = %s "
            "AND audience_id = 'vip' AND action = 'ENTER'", vip,
        ),
        "journey_instances": lambda c: expect(
            c, f"{waiter} ACTIVE at wait in cart-abandonment",
            "SELECT 1 FROM journey_instances WHERE customer_id = %s AND journey_id = "
            "'cart-abandonment' AND status = 'ACTIVE' AND current_node = 'wait'", waiter,
        ) or expect(
            c, f"{vip}'s vip-welcome COMPLETED",
            "SELECT 1 FROM journey_instances WHERE customer_id = %s AND journey_id = "
            "'vip-welcome' AND status = 'COMPLETED'", vip,
        ),
        "journey_transitions": lambda c: expect(
            c, f"{waiter}'s TRANSITION start -> wait and {vip}'s ACTION",
            "SELECT 1 FROM journey_transitions a, journey_transitions b WHERE a.customer_id = %s "
            "AND a.kind = 'TRANSITION' AND a.to_node = 'wait' AND b.customer_id = %s "
            "AND b.kind = 'ACTION'", waiter, vip,
        ),
        "webhook_deliveries": lambda c: expect(
            c, f"{buyer}'s CUSTOMER_REDEMPTION webhook DELIVERED",
            "SELECT 1 FROM webhook_deliveries WHERE customer_id = %s AND event = "
            "'CUSTOMER_REDEMPTION' AND outcome = 'DELIVERED'", buyer,
        ),
    }  # fmt: skip


def http_checks(client: httpx.Client, ids: dict[str, str], buyer: str, points: float) -> dict[str, Any]:
    """Ingest's read endpoints answer from the sink's tables."""
    event = client.get(f"/behavior/events/{ids['redeem']}")
    wallet = client.get(f"/customers/{buyer}/wallet")
    ok_event = event.status_code == 200 and event.json()["data"]["status"] == "RESOLVED"
    ok_wallet = wallet.status_code == 200 and wallet.json()["data"]["points"] == points
    return {
        "GET /behavior/events/{id}": None if ok_event else f"{event.status_code} {event.text[:200]}",
        "GET /customers/{id}/wallet": None if ok_wallet else f"{wallet.status_code} {wallet.text[:200]}",
    }


def lagging(db: str, checks: dict[str, Check], http: Callable[[], dict[str, str | None]]) -> dict:
    """What is still missing: table (or endpoint) -> the row it lacks."""
    with psycopg.connect(db) as conn:
        missing = {name: check(conn) for name, check in checks.items()}
    missing |= http()
    return {name: why for name, why in missing.items() if why}


def await_tables(db: str, checks: dict[str, Check], http: Callable[[], dict], timeout: float) -> dict:
    """Poll until nothing lags or `timeout`; returns what still lags."""
    deadline = time.monotonic() + timeout
    while (missing := lagging(db, checks, http)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return missing


def sink_errors(stack: dict[str, str]) -> list[str]:
    log = Path(stack["LOYALTY_LOCAL_DIR"]) / "logs" / "sink.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [line[:400] for line in lines if "error" in line.lower()][-3:]


def send_load(client: httpx.Client, who: dict[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    """Registration, purchase, redemption, a golden-ticket coupon (-> gold, vip audience, the
    vip-welcome journey and its webhook) and a page view; returns the event ids and the buyer's
    wallet as the loyalty processor computed it."""
    buyer, vip = who["buyer"], who["vip"]
    ids = {"register": post(client, "/customers", {"customer_id": buyer, "customer": {"name": "B"}})["id"]}
    purchase = {"customer_id": buyer, "type": "PURCHASE", "reference": "order-1"}
    props = {"amount": 150, "category": "electronics"}
    ids["purchase"] = post(client, "/behavior/events", purchase | {"properties": props}, wait=True)["id"]
    redeem = {"customer_id": buyer, "type": "PURCHASE", "reference": "order-2"}
    redeem |= {"properties": {"amount": 20}, "redeem": [{"reward_id": "POINTS", "amount": 50}]}
    result = post(client, "/behavior/events", redeem, wait=True)
    assert result["status"] == "RESOLVED", result
    ids["redeem"] = result["id"]
    # GOLDEN-2: the demo (same stack, later) claims GOLDEN-1, and each code is claimed once
    coupon = {"customer_id": vip, "type": "COUPON_USE", "coupon_code": "GOLDEN-2", "reference": "c-1"}
    ids["coupon"] = post(client, "/behavior/events", coupon)["id"]
    view = {"customer_id": who["visitor"], "type": "PAGE_VIEW", "properties": {"url": "/"}}
    ids["view"] = post(client, "/behavior/events", view)["id"]
    return ids, result["wallet"]


def test_every_table_keeps_up_while_a_customer_waits_in_a_journey(stack: dict[str, str]) -> None:
    run = uuid.uuid4().hex[:6]
    who = {k: f"{k}-{run}" for k in ("waiter", "buyer", "vip", "visitor")}
    headers = {"X-API-Key": stack["API_KEY"]}
    with httpx.Client(base_url=stack["INGEST_URL"], headers=headers, timeout=30) as client:
        cart = {"customer_id": who["waiter"], "type": "ADD_TO_CART", "properties": {"sku": "mug"}}
        cart_id = post(client, "/behavior/events", cart)["id"]
        moved = wait_for_activity(stack, who["waiter"], "TRANSITION")
        assert (moved["journey_id"], moved["to_node"]) == ("cart-abandonment", "wait")

        ids, wallet = send_load(client, who)
        ids["cart"] = cart_id
        checks = table_checks(ids, who, wallet)
        missing = await_tables(
            stack["DATABASE_URL"],
            checks,
            lambda: http_checks(client, ids, who["buyer"], wallet["points"]),
            KEEP_UP_S,
        )
    report = "\n".join(f"  {name}: missing {why}" for name, why in missing.items())
    errors = "\n".join(f"  {line}" for line in sink_errors(stack))
    assert not missing, (
        f"while {who['waiter']} waits in cart-abandonment, {len(missing)} of "
        f"{len(checks) + 2} tables/endpoints lag after {KEEP_UP_S:.0f}s:\n{report}\n"
        f"last sink errors:\n{errors or '  (none)'}"
    )


def test_demo_shows_every_part_of_the_product(stack: dict[str, str]) -> None:
    """`make run`'s second half with the program `make up` applies: a newcomer sees points, a
    redemption, a tier change, an audience, a journey entered and ended and webhooks delivered,
    each counted from PostgreSQL."""
    done = loyalty(os.environ | stack, "demo", "--timeout", "30", check=False)
    out = done.stdout
    assert "events accepted: 13, rejected: 0" in out, out
    assert done.returncode == 0 and "every part worked" in out, out + done.stderr
    assert "points demo-alice: 515.0" in out, out  # 200 sign-up + 125 + 50 big order + 100 first + 40
    # the dry run asks alice's partition what a purchase of 100 would earn and changes nothing
    dry = re.search(r"^dry run demo-alice: a 100 purchase would earn ([\d.]+) points .*; "
                    r"points still 515.0 \(were 515.0\)$", out, re.M)  # fmt: skip
    assert dry and float(dry[1]) > 0, out
    parts = ("redemptions", "tier changes", "audience members", "journeys ended", "webhooks delivered")
    for part in (*parts, "badges", "webhook reactions"):
        assert f"ok       {part}" in out, out
    (bob,) = [line for line in out.splitlines() if line.startswith("badges demo-bob: ")]
    assert set(bob.split(": ", 1)[1].split(", ")) == {"High roller", "Regular"}, out
    assert "cart-abandonment EXITED 1" in out and "vip-welcome COMPLETED 1" in out, out
    received = re.search(r"^webhooks received by the demo receiver: (\d+) ", out, re.M)
    assert received and int(received[1]) > 0, out  # the stack's receiver wrote receiver.jsonl
    assert "demo-carol bronze->gold" in out or "demo-carol -->gold" in out, out


def served_metrics(stack: dict[str, str]) -> dict[str, set[str]]:
    """Per service, the metric names its /metrics serves (as PromQL names them: counters with
    _total, histograms with _bucket/_sum/_count), from each family's TYPE line."""
    state = orjson.loads((Path(stack["LOYALTY_LOCAL_DIR"]) / "stack.json").read_bytes())
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count")}  # fmt: skip
    served: dict[str, set[str]] = {}
    for name, service in state["services"].items():
        if name == "receiver":
            continue
        text = httpx.get(f"http://127.0.0.1:{service['port']}/metrics", timeout=10).text
        names: set[str] = set()
        for family, kind in re.findall(r"^# TYPE (\S+) (\w+)$", text, re.M):
            names |= {family if family.endswith(s) else family + s for s in suffixes.get(kind, ("",))}
        served[name] = names
    return served


def test_every_metric_a_panel_or_an_alert_names_is_served_live(stack: dict[str, str]) -> None:
    """Issue 13: the metric names in deploy/grafana and deploy/prometheus exist on the running
    services' /metrics (the unit scan reads the source; this asks the processes)."""
    served = served_metrics(stack)
    assert {"loyalty", "audiences", "journeys", "router", "delivery", "sink", "ingest"} <= set(served)
    everything = set().union(*served.values())
    wanted = {n for _, expr in dashboard_exprs() for n in metric_names(expr)}
    wanted |= {n for rule in alert_rules() for n in metric_names(rule["expr"])}
    missing = sorted(wanted - everything)
    assert not missing, f"named by a panel or an alert but served by no service: {missing}"
