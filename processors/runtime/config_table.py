"""The program configuration as a global table: every processor and ingest read all of the
compacted `program.config` topic and keep the latest version (hot swap, no restart).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from processors.runtime.kafka_util import partitions_of, watermarks
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
            if program.version >= self._program.version:
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
        topic = topic_name(PROGRAM_CONFIG, self.settings)
        parts = partitions_of(consumer, topic)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        pending = {p for p in parts if watermarks(consumer, TopicPartition(topic, p))[1] > 0}
        if not pending:
            self._caught_up.set()
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                        if not pending:
                            self._caught_up.set()
                    continue
                if msg.value() is not None:
                    try:
                        self._apply(msg.value())
                    except Exception:
                        log.exception("invalid program record skipped")
        finally:
            consumer.close()


def _reader(settings: Settings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"program-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )


def latest_version(settings: Settings) -> int:
    table = ProgramTable(settings).start()
    try:
        return table.version
    finally:
        table.stop()


def publish_program(settings: Settings, program: Program, timeout: float = 30.0) -> int:
    """Write `program` as the next version to program.config; returns that version."""
    version = latest_version(settings) + 1
    body = program.model_copy(update={"version": version}).model_dump(mode="json", by_alias=True)
    value = encode(
        "ProgramConfig",
        {
            "version": version,
            "applied_at": int(time.time() * 1000),
            "program": orjson.dumps(body).decode(),
        },
    )
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
        }
    )
    errors: list[KafkaError] = []
    producer.produce(
        topic_name(PROGRAM_CONFIG, settings),
        key=PROGRAM_KEY,
        value=value,
        on_delivery=lambda err, _msg: errors.append(err) if err else None,
    )
    if producer.flush(timeout) or errors:
        raise RuntimeError(f"program version {version} not written: {errors or 'timeout'}")
    return version
