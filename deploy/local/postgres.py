"""A throwaway PostgreSQL cluster made with the machine's initdb / pg_ctl (no Docker engine).

PostgreSQL refuses to run as root, so when we are root the cluster belongs to a system user
(`loyaltypg`, created if missing) and the tools run through `runuser`. Auth is trust on
127.0.0.1; the superuser is `loyalty` and the database `loyalty` is created on first start.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deploy.local.paths import free_port, local_dir, port_open, sweep_stale

PG_USER = "loyaltypg"


def pg_bin(tool: str) -> str:
    """Path of a PostgreSQL tool: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(tool)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not candidates:
        raise FileNotFoundError(f"{tool} not found: install the PostgreSQL server binaries")
    return candidates[-1]


def _ensure_os_user() -> None:
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER]
        subprocess.run(cmd, check=True)


def _as_owner(cmd: list[str]) -> list[str]:
    """Run as the cluster owner: ourselves, or `loyaltypg` when we are root."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", PG_USER, "--", *cmd]


def reachable_home(home: Path) -> Path:
    """`home`, or a stable stand-in under /tmp when we are root and the cluster owner could not
    reach `home` (e.g. a checkout under /root, mode 700)."""
    if os.geteuid() != 0 or all(p.stat().st_mode & stat.S_IXOTH for p in home.parents if p.exists()):
        return home
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"loyalty-{home.name}-{digest}"


class Cluster:
    """One cluster in `home` (data/, server.log, socket) listening on 127.0.0.1:`port`."""

    def __init__(self, home: Path, port: int | None = None, fsync: bool = False):
        self.home = reachable_home(Path(home))
        self.port = port or free_port()
        self.fsync = fsync

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def url(self) -> str:
        return f"postgresql://loyalty@127.0.0.1:{self.port}/loyalty"

    def _run(self, cmd: list[str]) -> None:
        subprocess.run(
            _as_owner(cmd),
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd="/",
        )

    def _init(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            _ensure_os_user()
            shutil.chown(self.home, PG_USER, PG_USER)
        if not (self.data / "PG_VERSION").exists():
            cmd = [pg_bin("initdb"), "-D", str(self.data), "-U", "loyalty", "--auth=trust"]
            self._run([*cmd, "-E", "UTF8", "--no-sync", "--locale=C.UTF-8"])

    def running(self) -> bool:
        pid_file = self.data / "postmaster.pid"
        return (
            pid_file.exists()
            and subprocess.run(
                _as_owner([pg_bin("pg_ctl"), "status", "-D", str(self.data)]),
                stdout=subprocess.DEVNULL,
                cwd="/",
            ).returncode
            == 0
        )

    def start(self, timeout: int = 60) -> float:
        """Init on first use, start, create database `loyalty`; returns seconds taken."""
        began = time.monotonic()
        self._init()
        if not self.running():
            if port_open(self.port):
                raise RuntimeError(f"PostgreSQL: port {self.port} is already in use")
            opts = (
                f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1"
                f" -c fsync={'on' if self.fsync else 'off'} -c max_connections=200"
                " -c synchronous_commit=off -c full_page_writes=off"
            )
            cmd = [pg_bin("pg_ctl"), "start", "-D", str(self.data), "-w", "-t", str(timeout)]
            self._run([*cmd, "-l", str(self.home / "server.log"), "-o", opts])
        self._create_database()
        return time.monotonic() - began

    def _create_database(self) -> None:
        import psycopg

        admin = f"postgresql://loyalty@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'loyalty'").fetchone()
            if not exists:
                conn.execute("CREATE DATABASE loyalty")

    def stop(self) -> None:
        if self.data.exists() and self.running():
            self._run([pg_bin("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"])


@contextmanager
def test_cluster() -> Iterator[str]:
    """A throwaway cluster for one pytest session (fsync off); removed afterwards."""
    sweep_stale("test-pg-", lambda path: Cluster(path).stop())
    home = local_dir() / f"test-pg-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    cluster = Cluster(home)
    try:
        seconds = cluster.start()
        print(f"postgres test cluster {cluster.url} started in {seconds:.1f}s", file=sys.stderr)
        yield cluster.url
    finally:
        cluster.stop()
        shutil.rmtree(cluster.home, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    """Create database `name` on the server of `url`; returns the URL of the new database."""
    import psycopg

    from schemas.settings import libpq_url

    base = libpq_url(url)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + "/" + name


test_cluster.__test__ = False  # type: ignore[attr-defined]
