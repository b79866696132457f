"""The whole system on this machine: Kafka, PostgreSQL, topics, migrations, the program, services.

`up` is idempotent (running parts are kept), `down` stops by pid only what `up` started, and
`status` reports each part. Everything lives under `.local/` (LOYALTY_LOCAL_DIR): broker and
cluster data, service logs (`logs/`), pid files (`run/`), `stack.json` and `stack.env`.
When KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are set, those servers are used and none is started.
Services whose module does not exist yet are skipped, so the stack works while it is being built.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from deploy.local.paths import ROOT, free_ports, local_dir, pid_alive, port_open, runs, stop_pids
from schemas.settings import Settings

DEFAULT_PORTS = {
    "kafka": 19092,
    "kafka_controller": 19093,
    "postgres": 15433,
    "ingest": 18000,
    "receiver": 18080,
    "loyalty": 19101,
    "audiences": 19102,
    "journeys": 19103,
    "delivery": 19104,
    "sink": 19105,
    "router": 19106,
    "dashboard": 18090,
}
DEFAULT_PROGRAM = ROOT / "examples" / "program.yaml"
DEV_API_KEY = "dev-key"
RECEIVER = "processors.delivery.receiver"  # the webhook receiver (python -m), also the pid marker


@dataclass(frozen=True)
class Service:
    """A background process of the stack; healthy when GET :port/healthz answers 200."""

    name: str
    modules: tuple[str, ...]  # all must be importable, else the service is skipped
    args: tuple[str, ...]  # after `python -m`

    def available(self) -> bool:
        return all(_module_exists(m) for m in self.modules)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@dataclass
class Stack:
    """One local stack rooted at `home` (default .local/)."""

    home: Path = field(default_factory=local_dir)
    program: Path | None = None
    only: tuple[str, ...] | None = None  # restrict to these service names (tests, debugging)

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    def load_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def save_state(self, state: dict) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=2))

    def ports(self, state: dict) -> dict[str, int]:
        """Ports from stack.json, else LOYALTY_<NAME>_PORT, else the defaults.

        LOYALTY_PORTS=auto picks free ports instead of the defaults (tests)."""
        saved = state.get("ports") or {}
        if saved and set(DEFAULT_PORTS) <= set(saved):
            return saved
        auto = os.environ.get("LOYALTY_PORTS") == "auto"
        ports = dict(saved)  # a stack.json from before a service was added keeps its ports
        spare = [p for p in free_ports(len(DEFAULT_PORTS)) if p not in ports.values()] if auto else []
        for name, default in DEFAULT_PORTS.items():
            if name in ports:
                continue
            env = os.environ.get(f"LOYALTY_{name.upper()}_PORT")
            ports[name] = int(env) if env else (spare.pop() if auto else default)
        return ports

    def services(self, ports: dict[str, int]) -> list[Service]:
        """Every service in start order (receiver first: the program's webhook points at it)."""
        run = self.home / "state"
        cli = ("deploy.cli",)
        prefix = os.environ.get("TOPIC_PREFIX", "")  # isolated stacks on one cluster

        def processor(name: str) -> Service:
            args = ("process", name, "--state-dir", str(run / name), "--instance-id", f"{name}-1")
            mods = (f"processors.{name}.processor", "processors.runtime.service")
            return Service(name, mods, (*cli, *args, "--metrics-port", str(ports[name])))

        receiver_out = str(self.home / "receiver.jsonl")
        all_services = [
            Service(
                "receiver",
                (RECEIVER,),
                (RECEIVER, "--port", str(ports["receiver"]), "--out", receiver_out),
            ),
            Service("sink", ("sinks.service",), (*cli, "sink", "--metrics-port", str(ports["sink"]))),
            processor("loyalty"),
            processor("audiences"),
            processor("journeys"),
            processor("router"),  # events.inbound (JSON) -> events.loyalty / events.tracking
            Service(
                "delivery",
                ("processors.delivery.service",),
                (*cli, "process", "delivery", "--state-dir", str(run / "delivery"))
                + ("--group", f"{prefix}delivery", "--metrics-port", str(ports["delivery"])),
            ),
            Service(
                "ingest",
                ("ingest.service",),
                (*cli, "ingest", "--host", "127.0.0.1", "--port", str(ports["ingest"])),
            ),
            Service(  # the browser dashboard over the sink's tables (docs/dashboard.md)
                "dashboard",
                ("dashboard.service",),
                (*cli, "dashboard", "--host", "127.0.0.1", "--port", str(ports["dashboard"])),
            ),
        ]
        return [s for s in all_services if self.only is None or s.name in self.only]

    def pid_file(self, name: str) -> Path:
        return self.home / "run" / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        """The pid of our running `name` process, None if it is not running."""
        try:
            marker = RECEIVER if name == "receiver" else "deploy."
            return runs(int(self.pid_file(name).read_text()), marker)
        except (OSError, ValueError):
            return None

    def log_file(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"


def _say(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- infrastructure


def _kafka(stack: Stack, state: dict, ports: dict[str, int]) -> str:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        state["kafka"] = {"bootstrap": external, "started": False}
        _say(f"kafka       external {external}")
        return external
    from deploy.local.kafka import BrokerProcess

    home = stack.home / "kafka" / "broker"
    broker = BrokerProcess(home, ports["kafka"], ports["kafka_controller"])
    was_running = broker.running()
    seconds = broker.start()
    state["kafka"] = {"bootstrap": broker.bootstrap, "started": True, "home": str(broker.home)}
    how = "running" if was_running else f"started in {seconds:.1f}s"
    _say(f"kafka       {broker.bootstrap} {how} (pid {broker.pid})")
    return broker.bootstrap


def _postgres(stack: Stack, state: dict, ports: dict[str, int]) -> str:
    external = os.environ.get("DATABASE_URL")
    if external:
        state["postgres"] = {"url": external, "started": False}
        _say("postgres    external DATABASE_URL")
        return external
    from deploy.local.postgres import Cluster

    cluster = Cluster(stack.home / "pg", ports["postgres"], fsync=True)
    seconds = cluster.start()
    state["postgres"] = {"url": cluster.url, "started": True, "home": str(cluster.home)}
    _say(f"postgres    {cluster.url} ready in {seconds:.1f}s")
    return cluster.url


def _settings_env(bootstrap: str, database_url: str) -> dict[str, str]:
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DATABASE_URL": database_url}
    env["TOPIC_PREFIX"] = os.environ.get("TOPIC_PREFIX", "")
    env["TOPIC_PARTITIONS"] = os.environ.get("TOPIC_PARTITIONS", "6")
    return env


def _topics_and_migrations(env: dict[str, str]) -> None:
    from plumbing.topic_admin import ensure_topics

    settings = _settings(env)
    created = ensure_topics(settings)
    _say(f"topics      {len(created)} created (prefix {settings.topic_prefix!r})")
    if _module_exists("sinks.migrate"):
        from sinks.migrate import upgrade

        upgrade(env["DATABASE_URL"])
        _say("migrations  applied")
    else:
        _say("migrations  skipped (sinks.migrate not available yet)")


def _settings(env: dict[str, str]) -> Settings:

    return Settings(
        kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
        database_url=env["DATABASE_URL"],
        topic_prefix=env["TOPIC_PREFIX"],
        partitions=int(env["TOPIC_PARTITIONS"]),
    )


def program_env(receiver_url: str) -> dict[str, str]:
    """The environment `${NAME}` in the program expands from: this stack's receiver wins over an
    inherited RECEIVER_URL (a stack.env sourced from another stack would point elsewhere)."""
    return {**os.environ, "RECEIVER_URL": receiver_url}


def _apply_program(stack: Stack, state: dict, env: dict[str, str], receiver_url: str) -> None:
    path = stack.program or DEFAULT_PROGRAM
    if not path.exists():
        _say(f"program     skipped ({path} does not exist)")
        return
    if not _module_exists("plumbing.config_table"):
        _say("program     skipped (plumbing.config_table not available yet)")
        return
    from deploy.cli import ProgramFileError, load_program
    from plumbing.config_table import publish_program

    try:
        program = load_program(path, program_env(receiver_url))
    except ProgramFileError as exc:
        raise RuntimeError(f"program {path}: {exc}") from None
    canonical = program.model_dump_json()
    digest = hashlib.sha256(
        f"{canonical}|{env['KAFKA_BOOTSTRAP_SERVERS']}|{env['TOPIC_PREFIX']}".encode()
    ).hexdigest()
    if state.get("program", {}).get("sha256") == digest:
        _say(f"program     version {state['program']['version']} already applied")
        return
    version = publish_program(_settings(env), program)
    state["program"] = {"sha256": digest, "version": version, "path": str(path)}
    _say(f"program     {path.name} applied as version {version}")


# ---------------------------------------------------------------- services


def _supervised(args: tuple[str, ...]) -> tuple[str, ...]:
    """Long-running consumers run under deploy.local.supervise, which restarts one that
    exits (a processor that cannot make progress exits for a supervisor to restart it)."""
    if args[:2] in (("deploy.cli", "process"), ("deploy.cli", "sink")):
        return ("deploy.local.supervise", *args)
    return args


def _start(stack: Stack, service: Service, env: dict[str, str]) -> int:
    """Start `service` in the background unless its pid is alive; returns the pid."""
    pid = stack.pid(service.name)
    if pid_alive(pid):
        return pid
    log = stack.log_file(service.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    stack.pid_file(service.name).parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *_supervised(service.args)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    stack.pid_file(service.name).write_text(str(proc.pid))
    return proc.pid


def _healthy(port: int) -> bool:
    try:
        with urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return resp.status == 200
    except (URLError, OSError, ValueError):
        return False


def wait_healthy(stack: Stack, service: Service, port: int, pid: int, timeout: float = 90.0) -> float:
    """Poll /healthz until 200; fail early (with the log tail) if process `pid` died.

    The process is judged by the pid it was started with, not by `Stack.pid`'s command-line
    check: a child just past fork can still show an empty /proc/<pid>/cmdline while the kernel
    finishes its exec (ci40 reported a live receiver as exited that way)."""
    began = time.monotonic()
    log = stack.log_file(service.name)
    while time.monotonic() - began < timeout:
        if _healthy(port):
            return time.monotonic() - began
        if not pid_alive(pid):
            raise RuntimeError(f"{service.name} exited; log tail:\n{_tail(log)}")
        time.sleep(0.2)
    raise TimeoutError(f"{service.name} not healthy on :{port}; log tail:\n{_tail(log)}")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _write_env(stack: Stack, env: dict[str, str], ports: dict[str, int]) -> Path:
    keys = os.environ.get("INGEST_API_KEYS", "")
    api_key = keys.split(",")[0].partition(":")[0] if keys else DEV_API_KEY
    values = {
        **env,
        "INGEST_URL": f"http://127.0.0.1:{ports['ingest']}",
        "API_KEY": api_key,
        "RECEIVER_URL": f"http://127.0.0.1:{ports['receiver']}",
        "DASHBOARD_URL": f"http://127.0.0.1:{ports['dashboard']}/",
    }
    path = stack.home / "stack.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def _start_services(stack: Stack, state: dict, env: dict[str, str], ports: dict) -> None:
    """Start every available service not yet running, then wait for all of them to be healthy."""
    fresh = []
    for service in stack.services(ports):
        if not service.available():
            _say(f"{service.name:<11} skipped (module not available yet)")
            continue
        running = pid_alive(stack.pid(service.name))
        port = ports[service.name]
        if not running and port_open(port):
            env_var = f"LOYALTY_{service.name.upper()}_PORT"
            raise RuntimeError(f"{service.name}: port {port} is already in use (set {env_var})")
        pid = _start(stack, service, {"METRICS_HOST": os.environ.get("METRICS_HOST", "127.0.0.1"), **env})
        state.setdefault("services", {})[service.name] = {"pid": pid, "port": ports[service.name]}
        stack.save_state(state)
        if running:
            _say(f"{service.name:<11} :{ports[service.name]} running (pid {pid})")
        else:
            fresh.append((service, pid))
    began = time.monotonic()
    for service, pid in fresh:
        wait_healthy(stack, service, ports[service.name], pid)
        seconds = time.monotonic() - began
        _say(f"{service.name:<11} :{ports[service.name]} healthy after {seconds:.1f}s (pid {pid})")


# ---------------------------------------------------------------- commands


def up(stack: Stack | None = None) -> dict:
    """Bring everything up (keeping what runs); returns the saved state."""
    stack = stack or Stack()
    state = stack.load_state()
    ports = state["ports"] = stack.ports(state)
    stack.save_state(state)
    env = _settings_env(_kafka(stack, state, ports), _postgres(stack, state, ports))
    stack.save_state(state)
    _topics_and_migrations(env)
    receiver_url = f"http://127.0.0.1:{ports['receiver']}"
    _apply_program(stack, state, env, receiver_url)
    stack.save_state(state)
    _start_services(stack, state, env, ports)
    env_file = _write_env(stack, env, ports)
    _say(f"stack up: {env_file}")
    return state


def down(stack: Stack | None = None) -> None:
    """Stop the services, then the broker and cluster the stack started (by pid)."""
    stack = stack or Stack()
    state = stack.load_state()
    services = list(reversed(stack.services(stack.ports(state))))
    running = {s.name: stack.pid(s.name) for s in services if pid_alive(stack.pid(s.name))}
    stop_pids(list(running.values()))
    for service in services:
        if service.name in running:
            _say(f"{service.name:<11} stopped (pid {running[service.name]})")
        stack.pid_file(service.name).unlink(missing_ok=True)
    if state.get("kafka", {}).get("started"):
        from deploy.local.kafka import BrokerProcess

        BrokerProcess(Path(state["kafka"]["home"])).stop()
        _say("kafka       stopped")
    if state.get("postgres", {}).get("started"):
        from deploy.local.postgres import Cluster

        Cluster(Path(state["postgres"]["home"])).stop()
        _say("postgres    stopped")
    state.pop("services", None)
    stack.save_state(state)


def status(stack: Stack | None = None) -> dict[str, str]:
    """One line per part: running/stopped (and where)."""
    stack = stack or Stack()
    state = stack.load_state()
    ports = stack.ports(state)
    report = {}
    if state.get("kafka", {}).get("started"):
        from deploy.local.kafka import BrokerProcess

        broker = BrokerProcess(Path(state["kafka"]["home"]))
        where = state["kafka"]["bootstrap"]
        report["kafka"] = f"{'running' if broker.running() else 'stopped'} {where}"
    elif state.get("kafka"):
        report["kafka"] = f"external {state['kafka']['bootstrap']}"
    if state.get("postgres", {}).get("started"):
        from deploy.local.postgres import Cluster

        up = Cluster(Path(state["postgres"]["home"])).running()
        report["postgres"] = f"{'running' if up else 'stopped'} {state['postgres']['url']}"
    elif state.get("postgres"):
        report["postgres"] = "external DATABASE_URL"
    for service in stack.services(ports):
        pid = stack.pid(service.name)
        if not service.available():
            report[service.name] = "not available"
        elif pid_alive(pid):
            health = "healthy" if _healthy(ports[service.name]) else "unhealthy"
            report[service.name] = f"running pid {pid} :{ports[service.name]} {health}"
        else:
            report[service.name] = "stopped"
    for name, line in report.items():
        _say(f"{name:<11} {line}")
    return report


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="loyalty stack", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--program", type=Path, help="program YAML (default examples/program.yaml)")
    parser.add_argument("--services", help="comma-separated subset of services to run")
    args = parser.parse_args(argv)
    only = tuple(args.services.split(",")) if args.services else None
    stack = Stack(program=args.program, only=only)
    try:
        {"up": up, "down": down, "status": status}[args.action](stack)
    except (RuntimeError, TimeoutError) as exc:
        print(f"loyalty stack {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0
