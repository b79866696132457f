"""librdkafka's transactional error model, as its documentation prescribes it, in one place.

Each error of a transactional call says what to do (rdkafka.h, `rd_kafka_commit_transaction`
and friends; confluent-kafka's KafkaError.retriable / txn_requires_abort / fatal):

- retriable (e.g. `_TIMED_OUT` while a broker restarts): call the same function again; the
  operation goes on in the background, so a retried commit or abort picks it up;
- txn_requires_abort: abort the transaction, rewind the input to the last commit, go on;
- fatal (`_FENCED`, an epoch lost while the broker was away, `OUT_OF_ORDER_SEQUENCE_NUMBER`,
  `INVALID_TXN_STATE`): this producer instance can do nothing more; a new one with the same
  transactional.id (init_transactions bumps the epoch, fencing the old one and finishing or
  aborting its open transaction) then a rewind carries on.

Every call gets a deadline, so nothing blocks for ever; the runner's watchdog turns "no
commit for `stall_timeout_s`" into an exit for the supervisor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_BACKOFF_S = 0.1
MAX_RENEWALS = 3  # producers replaced with no commit in between: then exit (a live twin?)


class TransactionBroken(BaseException):  # noqa: N818 (a signal, like KeyboardInterrupt)
    """The producer refused a call of the open transaction (abortable, fatal or fenced).

    A BaseException so that no `except Exception` on the way (the runtime's poison path, a
    processor's catch-all) takes it for its record's fault: the runner ends the transaction and
    rewinds, and the record is processed again, never dead-lettered for the broker's sake."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(str(error))
        self.error = error


def error_of(exc: BaseException) -> KafkaError:
    if isinstance(exc, TransactionBroken):
        return exc.error
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return KafkaError(KafkaError._FAIL, str(exc))


def left(deadline: float, floor: float = 0.1) -> float:
    """Seconds left before `deadline` (at least `floor`: librdkafka needs a positive timeout)."""
    return max(floor, deadline - time.monotonic())


def retrying(call: Callable[[float], T], deadline: float, floor: float = 0.1, what: str = "") -> T:
    """`call(timeout)`, again while it fails with a retriable error and time is left."""
    while True:
        try:
            return call(left(deadline, floor))
        except KafkaException as exc:
            error = error_of(exc)
            if error.fatal() or error.txn_requires_abort() or not error.retriable():
                raise
            if time.monotonic() >= deadline:
                raise
            log.info("retrying a transactional call", extra={"call": what, "error": str(error)})
            time.sleep(RETRY_BACKOFF_S)  # a backoff: the error returned at once, not at the timeout


def timed_out(what: str) -> TransactionBroken:
    """Records not delivered by the deadline: the transaction cannot commit, abort it."""
    return TransactionBroken(KafkaError(KafkaError._TIMED_OUT, what, retriable=True))
