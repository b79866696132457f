"""A real Apache Kafka broker (KRaft, combined broker + controller) run with the machine's Java.

There is no Docker engine on the development machines, so the broker jars come from Maven Central
(deploy/local/pom.xml) and run with plain `java`. One `BrokerProcess` owns one directory: its
config, data and logs; it can be stopped and started again on the same ports and data (fault tests).
"""

from __future__ import annotations

import base64
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deploy.local.paths import (
    ROOT,
    free_ports,
    local_dir,
    pid_alive,
    port_open,
    runs,
    stop_pid,
    sweep_stale,
)

POM = ROOT / "deploy" / "local" / "pom.xml"
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded before any fork (see die_with_parent)


def libs_dir() -> Path:
    """Shared by every broker of the checkout (LOYALTY_KAFKA_LIBS overrides)."""
    return Path(os.environ.get("LOYALTY_KAFKA_LIBS") or ROOT / ".local" / "kafka" / "libs")


def ensure_jars() -> Path:
    """Fetch the broker jars with Maven once; later calls reuse the cached directory."""
    libs = libs_dir()
    if libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    libs.mkdir(parents=True, exist_ok=True)
    cmd = ["mvn", "-q", "-B", "-Dstyle.color=never", "dependency:copy-dependencies"]
    cmd += [f"-DoutputDirectory={libs}", "-f", str(POM)]
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"fetching Kafka jars failed:\n{done.stdout}\n{done.stderr}")
    return libs


def _cluster_id() -> str:
    """A Kafka Uuid string (url-safe base64, no padding) without starting a JVM for it. Like
    Kafka's Uuid.randomUuid, never one starting with '-': `kafka-storage format -t -abc...`
    would read it as an option and fail (1 broker start in 64)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{cport}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.partitions=6
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.cleaner.min.compaction.lag.ms=0
"""

LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.raft=WARN
"""


class BrokerProcess:
    """One KRaft broker living in `home`: `start()`, `stop()`, and again, on the same ports/data."""

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        controller_port: int | None = None,
        bound_to_parent: bool = False,
    ):
        self.home = Path(home)
        self.bound_to_parent = bound_to_parent  # test brokers die with the test session
        known = self._configured_ports()
        spare = free_ports(2)  # chosen together: two free_port() calls could return the same port
        self.port = port or known.get("PLAINTEXT") or spare[0]
        self.controller_port = controller_port or known.get("CONTROLLER") or spare[1]
        self.pid_file = self.home / "kafka.pid"

    def _configured_ports(self) -> dict[str, int]:
        """Listener ports of an existing server.properties: a restart keeps its ports."""
        try:
            text = (self.home / "server.properties").read_text()
        except OSError:
            return {}
        line = next((ln for ln in text.splitlines() if ln.startswith("listeners=")), "")
        ports = {}
        for listener in line.removeprefix("listeners=").split(","):
            name, _, address = listener.partition("://")
            if address:
                ports[name] = int(address.rsplit(":", 1)[1])
        return ports

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        try:
            return runs(int(self.pid_file.read_text()), "kafka.Kafka")
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        return pid_alive(self.pid)

    def _configure(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        props = self.home / "server.properties"
        data = self.home / "data"
        props.write_text(SERVER_PROPERTIES.format(port=self.port, cport=self.controller_port, data=data))
        (self.home / "log4j.properties").write_text(LOG4J_PROPERTIES.format(log=self.home / "server.log"))
        if not (data / "meta.properties").exists():
            classpath = f"{ensure_jars()}/*"
            log4j = f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}"
            cmd = ["java", log4j, "-cp", classpath, "kafka.tools.StorageTool", "format"]
            subprocess.run(
                [*cmd, "-t", _cluster_id(), "-c", str(props)],
                check=True,
                stdout=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
        return props

    def start(self, timeout: float = 90.0) -> float:
        """Start in the background (formatting storage the first time); wait until it answers.

        Returns the start time in seconds. A broker already running is left alone."""
        began = time.monotonic()
        if self.running():
            return 0.0
        for port in (self.port, self.controller_port):
            if port_open(port):
                raise RuntimeError(f"Kafka: port {port} is already in use by another process")
        props = self._configure()
        log4j = self.home / "log4j.properties"
        cmd = ["java", "-Xms256m", "-Xmx2g", "-XX:+UseG1GC", "-Djava.awt.headless=true"]
        cmd += [f"-Dlog4j.configuration=file:{log4j}", f"-Dkafka.logs.dir={self.home}"]
        cmd += ["-cp", f"{ensure_jars()}/*", "kafka.Kafka", str(props)]
        with open(self.home / "kafka.out", "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent if self.bound_to_parent else None,
            )
        self.pid_file.write_text(str(proc.pid))
        wait_ready(self.bootstrap, timeout, alive=lambda: proc.poll() is None, log=self.log_tail)
        return time.monotonic() - began

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (controlled shutdown), then SIGKILL after `timeout`."""
        stop_pid(self.pid, timeout)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """Crash the broker (SIGKILL): for fault tests."""
        pid = self.pid
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        stop_pid(pid, 5.0)
        self.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for name in ("kafka.out", "server.log"):
            path = self.home / name
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (no orphaned test brokers)."""
    _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_ready(bootstrap: str, timeout: float, alive=lambda: True, log=lambda: "") -> None:
    """Poll AdminClient.list_topics until the broker answers (or it died / time ran out)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"Kafka broker exited during start:\n{log()}")
        try:
            if admin.list_topics(timeout=1.0).brokers:
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    raise TimeoutError(f"Kafka at {bootstrap} not ready after {timeout}s:\n{log()}")


def start_broker(home: Path, port: int | None = None, controller_port: int | None = None):
    """Start (or reuse) the broker in `home`; returns its BrokerProcess."""
    broker = BrokerProcess(home, port, controller_port)
    broker.start()
    return broker


def stop_broker(broker: BrokerProcess) -> None:
    broker.stop()


@contextmanager
def test_broker() -> Iterator[str]:
    """A throwaway broker on free ports for one pytest session; removed afterwards."""
    with test_broker_process() as broker:
        yield broker.bootstrap


@contextmanager
def test_broker_process(home: Path | None = None) -> Iterator[BrokerProcess]:
    """Like test_broker() but yields the BrokerProcess (stop/start/kill for fault tests)."""
    sweep_stale("test-kafka-", lambda path: BrokerProcess(path).stop())
    home = home or local_dir() / f"test-kafka-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    broker = BrokerProcess(home, bound_to_parent=True)
    try:
        seconds = broker.start()
        print(f"kafka test broker {broker.bootstrap} started in {seconds:.1f}s", file=sys.stderr)
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


# Helpers, not tests: keep pytest from collecting them when a test module imports them.
test_broker.__test__ = False  # type: ignore[attr-defined]
test_broker_process.__test__ = False  # type: ignore[attr-defined]
