"""The compose stack (deploy/compose/compose.yaml) on a Docker engine, with the real images.

- A PURCHASE posted over HTTP to the ingest container reaches the wallet row in the PostgreSQL
  container and arrives, signed, at the demo receiver container.
- Under a steady HTTP load, loyalty scales 1 -> 3 -> 1 (`docker compose up --scale`): the
  partitions move to the new replicas and back, and every wallet ends exact.

Driven with `docker compose` in a subprocess (project `loyaltytest<pid>`, removed with its
volumes afterwards). The images are built first with deploy/docker/build.sh (cached layers: a
few seconds when nothing changed; LOYALTY_COMPOSE_BUILD=0 skips it). Skipped when no Docker
engine or no compose answers, unless REQUIRE_DOCKER=1 (then it fails): `make test` on a
machine without Docker stays green; `.ci/compose.sh` sets REQUIRE_DOCKER=1.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import psycopg
import pytest

from deploy.local.paths import ROOT
from processors.delivery.verify import verify
from processors.runtime.testing import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

COMPOSE_FILE = ROOT / "deploy" / "compose" / "compose.yaml"
SECRET = "whsec_Y29tcG9zZS10ZXN0LXNlY3JldC0wMTIzNDU2Nzg5"
PARTITIONS = 6
PROGRAM = f"""\
name: compose-test
campaigns:
  - id: purchase-points
    triggers: [PURCHASE]
    condition: properties.amount > 0
    formula: properties.amount * 1
webhooks:
  - id: receiver
    url: ${{RECEIVER_URL}}/webhooks
    secret: {SECRET}
    events: [CUSTOMER_ACCUMULATION]
"""


def _run(cmd: list[str], timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs
    )


def compose_command() -> tuple[list[str] | None, str]:
    """(`docker compose` or `docker-compose`, "") when an engine and compose answer, else
    (None, why not). LOYALTY_COMPOSE chooses the command."""
    if not shutil.which("docker"):
        return None, "no docker CLI on PATH"
    try:
        info = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30)
    except subprocess.TimeoutExpired:
        return None, "`docker info` did not answer in 30 s"
    if info.returncode != 0:
        why = (info.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"no Docker engine answers (`docker info`: {why})"
    chosen = os.environ.get("LOYALTY_COMPOSE")  # e.g. "docker-compose" (Debian's 1.29)
    for cmd in [shlex.split(chosen)] if chosen else (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) and _run([*cmd, "version"]).returncode == 0:
            return cmd, ""
    return None, "a Docker engine answers but neither `docker compose` nor `docker-compose` works"


@dataclass
class Compose:
    """One compose project of deploy/compose/compose.yaml."""

    cmd: list[str]
    project: str
    env: dict[str, str]
    log: list[str] = field(default_factory=list)

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        full = [*self.cmd, "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        done = _run(full, timeout=timeout, env=self.env, cwd=ROOT)
        self.log.append(f"$ {' '.join(full[len(self.cmd) :])} -> {done.returncode}")
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(full)} failed:\n{done.stdout}\n{done.stderr}\n{self.logs()}")
        return done.stdout

    def containers(self, service: str) -> list[str]:
        return self("ps", "-q", service).split()

    def inspect(self, ids: list[str]) -> list[dict]:
        if not ids:
            return []
        done = _run(["docker", "inspect", *ids])
        return json.loads(done.stdout) if done.returncode == 0 else []

    def healthy(self, service: str) -> list[str]:
        """Ids of the service's running containers whose healthcheck passes."""
        states = self.inspect(self.containers(service))
        return [s["Id"] for s in states if s["State"].get("Health", {}).get("Status") == "healthy"]

    def address(self, service: str, port: int) -> str:
        published = self("port", service, str(port)).strip().splitlines()
        assert published, f"{service}:{port} is not published"
        host, _, number = published[0].rpartition(":")
        return f"{'127.0.0.1' if host in ('0.0.0.0', '', '[::]') else host}:{number}"

    def logs(self, tail: int = 60) -> str:
        try:
            done = _run([*self.cmd, "-p", self.project, "-f", str(COMPOSE_FILE), "logs", "--no-color",
                         "--tail", str(tail)], timeout=60, env=self.env, cwd=ROOT)  # fmt: skip
            return done.stdout[-60_000:]
        except subprocess.TimeoutExpired:
            return "(compose logs timed out)"


def assigned_partitions(container: str) -> int | None:
    """stream_assigned_partitions of the processor in `container` (its own /metrics)."""
    url = "http://127.0.0.1:9100/metrics"
    probe = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=3).read().decode())"
    done = _run(["docker", "exec", container, "python3", "-c", probe])
    if done.returncode != 0:
        return None
    match = re.search(r'^stream_assigned_partitions\{processor="loyalty"\} (\S+)$', done.stdout, re.M)
    return int(float(match[1])) if match else None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    cmd, why = compose_command()
    if cmd is None:
        if os.environ.get("REQUIRE_DOCKER") == "1":
            pytest.fail(f"REQUIRE_DOCKER=1 but {why}")
        pytest.skip(f"{why} (set REQUIRE_DOCKER=1 to make this a failure)")
    if os.environ.get("LOYALTY_COMPOSE_BUILD", "1") != "0":
        built = _run([str(ROOT / "deploy" / "docker" / "build.sh"), "all"], timeout=1500, cwd=ROOT)
        assert built.returncode == 0, f"building the images failed:\n{built.stdout}\n{built.stderr}"
        print(built.stderr)
    program_dir = tmp_path_factory.mktemp("compose-program")
    (program_dir / "program.yaml").write_text(PROGRAM)
    program_dir.chmod(0o755)
    (program_dir / "program.yaml").chmod(0o644)
    env = os.environ | {
        "LOYALTY_PROGRAM_DIR": str(program_dir),
        "LOYALTY_PROGRAM_FILE": "program.yaml",
        "WEBHOOK_SECRET": SECRET,
        "TOPIC_PARTITIONS": str(PARTITIONS),
        "POSTGRES_FSYNC": "off",  # a throwaway database
        "KAFKA_HEAP_OPTS": "-Xms256m -Xmx768m",
    }
    for name in ("INGEST_PUBLISH", "RECEIVER_PUBLISH", "POSTGRES_PUBLISH", "TOPIC_PREFIX", "INGEST_API_KEYS"):
        env.pop(name, None)
    compose = Compose(cmd, f"loyaltytest{os.getpid()}", env)
    began = time.monotonic()
    try:
        compose("up", "-d", timeout=600)
        for service in ("ingest", "loyalty", "audiences", "journeys", "delivery", "sink", "receiver"):
            wait_for(lambda s=service: compose.healthy(s), timeout=240, interval=0.5,
                     what=f"{service} healthy")  # fmt: skip
        print(f"compose stack healthy {time.monotonic() - began:.1f}s after `up`")
        yield {
            "compose": compose,
            "ingest": f"http://{compose.address('ingest', 8080)}",
            "receiver": f"http://{compose.address('receiver', 8080)}",
            "db": f"postgresql://loyalty:loyalty@{compose.address('postgres', 5432)}/loyalty",
        }
    finally:
        print(compose.logs())
        print("\n".join(compose.log))
        compose("down", "-v", "--remove-orphans", "-t", "10", timeout=300, check=False)


def query(url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def post_event(client: httpx.Client, event: dict, deadline: float) -> None:
    """POST until 202. The same `reference` gives the same event id, applied once, so a retry
    after a timeout or a 503 never counts twice."""
    while True:
        try:
            resp = client.post("/behavior/events", json=event)
            if resp.status_code == 202:
                return
            error = f"{resp.status_code} {resp.text[:200]}"
        except httpx.HTTPError as exc:
            error = repr(exc)
        if time.monotonic() > deadline:
            raise AssertionError(f"ingest did not accept {event['reference']}: {error}")
        time.sleep(0.2)  # back off before the retry (a transient error, nothing to wait on)


def test_purchase_reaches_wallet_and_signed_webhook(stack: dict) -> None:
    buyer = f"buyer-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=stack["ingest"], headers={"X-API-Key": "dev-key"}, timeout=10) as client:
        purchase = {"customer_id": buyer, "type": "PURCHASE", "reference": "order-1"}
        post_event(client, purchase | {"properties": {"amount": 125}}, time.monotonic() + 60)

    wallet = wait_for(
        lambda: query(stack["db"], "SELECT points FROM wallets WHERE customer_id = %s", buyer),
        timeout=90, interval=0.25, what="the buyer's wallet row in PostgreSQL",
    )  # fmt: skip
    assert wallet == [(125.0,)]

    def webhook() -> dict | None:
        received = httpx.get(f"{stack['receiver']}/received", timeout=5).json()["requests"]
        return next((r for r in received if buyer in r["body"] and r["path"] == "/webhooks"), None)

    hit = wait_for(webhook, timeout=90, interval=0.25, what="the webhook at the receiver container")
    assert hit["verified"], hit["error"]
    body = verify(hit["body"].encode(), hit["headers"], SECRET)  # checked again here, with our secret
    assert body["event"] == "CUSTOMER_ACCUMULATION"
    assert buyer in json.dumps(body["data"])


class Load(threading.Thread):
    """PURCHASEs at a steady rate over HTTP; `expected` is what every wallet must end at."""

    def __init__(self, url: str, customers: int = 40, rate: float = 25.0) -> None:
        super().__init__(name="compose-load", daemon=True)
        self.url, self.customers, self.interval = url, customers, 1.0 / rate
        self.prefix = f"load-{uuid.uuid4().hex[:6]}"
        self.expected: Counter[str] = Counter()
        self.accepted = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        headers = {"X-API-Key": "dev-key"}
        try:
            with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
                i, tick = 0, time.monotonic()
                while not self.stopping.is_set():
                    customer = f"{self.prefix}-{i % self.customers}"
                    amount = 1 + i % 9
                    event = {"customer_id": customer, "type": "PURCHASE", "reference": f"{self.prefix}-{i}"}
                    post_event(client, event | {"properties": {"amount": amount}}, time.monotonic() + 120)
                    self.expected[customer] += amount
                    self.accepted += 1
                    i += 1
                    tick += self.interval
                    self.stopping.wait(max(0.0, tick - time.monotonic()))  # the load's pace
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def wait_accepted(self, more: int, what: str) -> None:
        target = self.accepted + more
        wait_for(lambda: self.accepted >= target or self.error, timeout=120, interval=0.1, what=what)
        assert self.error is None, self.error

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=150)
        assert self.error is None, self.error


def test_loyalty_scales_1_3_1_under_load_with_exact_wallets(stack: dict) -> None:
    compose: Compose = stack["compose"]

    def partitions() -> dict[str, int | None]:
        return {c[:12]: assigned_partitions(c) for c in compose.containers("loyalty")}

    def spread_over(replicas: int) -> dict | None:
        """The assignment once `replicas` replicas, all healthy, each own some of the partitions."""
        if len(compose.healthy("loyalty")) != replicas:
            return None
        owned = partitions()
        counts = list(owned.values())
        ok = len(counts) == replicas and None not in counts and sum(counts) == PARTITIONS
        return owned if ok and min(counts) > 0 else None

    one = wait_for(
        lambda: spread_over(1), timeout=120, interval=0.5, what="one loyalty replica with every partition"
    )
    load = Load(stack["ingest"])
    load.start()
    try:
        load.wait_accepted(100, "the first 100 events of the load")
        compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "loyalty=3", "loyalty")
        three = wait_for(lambda: spread_over(3), timeout=240, interval=1.0,
                         what="3 loyalty replicas sharing the partitions")  # fmt: skip
        assert set(one) <= set(three), "scaling up kept the first replica"
        load.wait_accepted(150, "150 events while 3 replicas run")
        compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "loyalty=1", "loyalty")
        back = wait_for(lambda: spread_over(1), timeout=240, interval=1.0,
                        what="one loyalty replica owning every partition again")  # fmt: skip
        assert set(back) == set(one), "scaling down kept the first replica"
        load.wait_accepted(100, "100 events after scaling back to 1")
    finally:
        load.stop()
    print(f"load: {load.accepted} purchases for {len(load.expected)} customers; {one} -> {three} -> {back}")

    def wallets() -> dict[str, float]:
        rows = query(stack["db"], "SELECT customer_id, points FROM wallets WHERE customer_id LIKE %s",
                     f"{load.prefix}-%")  # fmt: skip
        return dict(rows)

    expected = {customer: float(points) for customer, points in load.expected.items()}
    seen: list[dict[str, float]] = [{}]

    def exact() -> bool:
        seen[0] = wallets()
        return seen[0] == expected

    try:
        wait_for(exact, timeout=240, interval=0.5, what="exact wallets")
    except AssertionError:
        wrong = {c: (seen[0].get(c), p) for c, p in expected.items() if seen[0].get(c) != p}
        extra = sorted(set(seen[0]) - set(expected))
        pytest.fail(f"wallets not exact after 240 s: (got, expected) {wrong}; unexpected {extra}")

    def ledger_lines() -> int:
        sql = "SELECT count(*) FROM ledger_lines WHERE customer_id LIKE %s"
        return query(stack["db"], sql, f"{load.prefix}-%")[0][0]

    wait_for(lambda: ledger_lines() == load.accepted, timeout=120, interval=0.5,
             what=f"one ledger line per accepted purchase ({load.accepted})")  # fmt: skip
