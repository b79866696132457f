"""The program configuration as a global table: every processor and ingest read all of the
compacted `program.config` topic and keep the latest version (hot swap, no restart).

Versions are assigned by a single writer: `publish_program` uses one transactional id per
deployment, so a publisher's start fences (and aborts) any other publish still in flight, and
only the newest publisher can commit (a process keeps its publisher: see `_KEPT`); it reads
the latest committed version, checks it against the version the caller based its
change on (compare-and-set: `VersionConflict` when it moved) and commits version + 1 together
with the caller's extra records (history, audit) in one Kafka transaction. Two publishers can
therefore never commit the same version, and a reader (read_committed) never sees a loser.

A reader reads to the high watermark, not to the last stable offset (`read_to_end`), so a
publish that has answered its caller is always in what a reader starting after it sees, and a
reader starting during a publish waits for it to commit or abort. A publisher that dies in its
transaction holds a reader for `kafka_util.OPEN_WAIT_S` (5 s), after which the reader leaves that
transaction out (it is aborted by its 10 s timeout, or when the next publish fences it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from plumbing.kafka_util import read_to_end
from schemas.codec import decode, encode
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import PROGRAM_CONFIG, topic_name

log = logging.getLogger(__name__)
PROGRAM_KEY = "program"


class ProgramTable:
    """Tails program.config in a background thread; `current()` is the latest Program."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._program = Program()
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def current(self) -> Program:
        return self._program

    @property
    def version(self) -> int:
        return self._program.version

    def start(self, wait: float = 30.0) -> ProgramTable:
        """Start tailing; block until the topic has been read to its end once."""
        self._thread = threading.Thread(target=self._run, name="program-table", daemon=True)
        self._thread.start()
        if not self._caught_up.wait(wait) or self.error:
            raise RuntimeError(f"program.config could not be read to its end: {self.error}")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def wait_for_version(self, version: int, timeout: float = 10.0) -> Program:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._program.version < version:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"program version {version} not seen")
                self._lock.wait(left)
        return self._program

    def _apply(self, raw: bytes) -> None:
        record = decode(raw, "ProgramConfig")
        program = Program.model_validate(orjson.loads(record["program"]))
        program = program.model_copy(update={"version": record["version"]})
        with self._lock:
            # first wins: a later record of a version already held is ignored (only a publish
            # outside publish_program's transaction could write one)
            if program.version > self._program.version:
                self._program = program
                log.info("program version %s loaded", program.version)
            self._lock.notify_all()

    def _run(self) -> None:
        try:
            self._tail()
        except BaseException as exc:
            self.error = exc
            self._caught_up.set()
            log.exception("program table stopped")

    def _tail(self) -> None:
        consumer = _reader(self.settings)
        try:
            self.catch_up(consumer, stop=self._stop)
            self._caught_up.set()
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is not None and msg.error() is None and msg.value() is not None:
                    self._apply_valid(msg.value())
        finally:
            consumer.close()

    def catch_up(
        self, consumer: Consumer, timeout: float = 30.0, stop: threading.Event | None = None
    ) -> None:
        """Read program.config to its end: every publish committed before the call."""
        topic = topic_name(PROGRAM_CONFIG, self.settings)
        read_to_end(consumer, self.settings.kafka_bootstrap_servers, topic, self._apply_valid, timeout, stop)

    def _apply_valid(self, raw: bytes) -> None:
        try:
            self._apply(raw)
        except Exception:
            log.exception("invalid program record skipped")


def _reader(settings: Settings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"program-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",  # a fenced or aborted publish is never read
            "auto.offset.reset": "earliest",
        }
    )


def latest_version(settings: Settings) -> int:
    return latest_program(settings).version


def latest_program(settings: Settings) -> Program:
    """The latest committed program, read from the start of program.config (no thread)."""
    table = ProgramTable(settings)
    consumer = _reader(settings)
    try:
        table.catch_up(consumer)
    finally:
        consumer.close()
    return table.current()


class VersionConflict(Exception):
    """The program moved on since the version the change was based on (HTTP 412)."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"program is at version {current}, not {expected}")
        self.expected = expected
        self.current = current


_PUBLISHING = threading.Lock()
# (logical topic, key, value) records committed in the publish's transaction; given the program
# it replaces and the version being written
Extra = Callable[[Program, int], list[tuple[str, str, bytes]]]


def publish_program(
    settings: Settings,
    program: Program,
    timeout: float = 30.0,
    *,
    expected: int | None = None,
    extra: Extra | None = None,
    attempts: int = 8,
) -> int:
    """Write `program` as the next version to program.config; returns that version.

    `expected`: the version the change was made against; raises VersionConflict when the
    latest committed version differs (None: publish on top of whatever is latest)."""
    for attempt in range(attempts):
        try:
            with _PUBLISHING:  # publishers in one process take turns instead of fencing each other
                return _publish_once(settings, program, timeout, expected, extra)
        except KafkaException as exc:  # fenced by another process's publish: re-read and re-check
            if attempt == attempts - 1 or not (_retriable(exc) or attempt == 0):
                raise RuntimeError(f"program not written: {exc}") from None
            if attempt > 0:  # the first retry is at once: a kept producer may just have gone stale
                time.sleep((0.1 + uuid.uuid4().int % 1000 / 1000) * min(attempt, 4))  # jitter
    raise AssertionError("unreachable")


def _retriable(exc: KafkaException) -> bool:
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and (
        err.retriable() or err.txn_requires_abort() or err.fatal() or err.code() == KafkaError._FENCED
    )


def _publish_once(
    settings: Settings, program: Program, timeout: float, expected: int | None, extra: Extra | None
) -> int:
    producer = _publisher(settings, timeout)
    try:
        before = latest_program(settings)
        if expected is not None and before.version != expected:
            raise VersionConflict(expected, before.version)
        version = before.version + 1
        records = [(PROGRAM_CONFIG, PROGRAM_KEY, _config_value(program, version))]
        records += extra(before, version) if extra else []
        producer.begin_transaction()
        for topic, key, value in records:
            producer.produce(topic_name(topic, settings), key=key, value=value)
        producer.commit_transaction(timeout)  # flushes; raises if any record was not written
        return version
    except VersionConflict:
        raise
    except BaseException:
        _drop_publisher(producer)
        raise


# The process's transactional producer, initialised once and kept: a new one's
# init_transactions took 0.5 s whenever the last publish's markers were still being written
# (librdkafka retries its producer id every 500 ms), and a publish now takes ~0.1 s. Kept, it
# no longer fences the others when a publish starts, and needs not: only the holder of the
# newest epoch can commit, so a publish of this process made after another process's init
# fails as fenced and is retried from a new producer (whose init fences and aborts the other's
# open transaction), and the version is read to the high watermark, after the last commit.
_KEPT: dict[tuple[str, str], Producer] = {}  # guarded by _PUBLISHING


def _publisher(settings: Settings, timeout: float) -> Producer:
    key = (settings.kafka_bootstrap_servers, settings.topic_prefix)
    producer = _KEPT.get(key)
    if producer is None:
        producer = _transactional_producer(settings)
        producer.init_transactions(timeout)  # fences every other publisher, aborts its open txn
        _KEPT.clear()  # one deployment's producer at a time (tests publish for many prefixes)
        _KEPT[key] = producer
    return producer


def _drop_publisher(producer: Producer) -> None:
    """Forget a producer a publish failed with (fenced, failed or interrupted): the next
    publish starts from a new one. Its open transaction, if any, is aborted when it can be."""
    for key in [k for k, kept in _KEPT.items() if kept is producer]:
        del _KEPT[key]
    with contextlib.suppress(KafkaException):
        producer.abort_transaction(5)


def _config_value(program: Program, version: int) -> bytes:
    body = program.model_copy(update={"version": version}).model_dump(mode="json", by_alias=True)
    return encode(
        "ProgramConfig",
        {
            "version": version,
            "applied_at": int(time.time() * 1000),
            "program": orjson.dumps(body).decode(),
        },
    )


def _transactional_producer(settings: Settings) -> Producer:
    """One transactional id per deployment (TOPIC_PREFIX): the single-writer fence."""
    return Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "transactional.id": f"{settings.topic_prefix}program-publisher",
            "acks": "all",
            "enable.idempotence": True,
            "transaction.timeout.ms": 10000,  # a publish takes milliseconds
        }
    )
