"""The sink's alignment of events and results in a backlog (sinks/align.py), as pure logic:
what is held, what is released, what a batch takes, what pauses."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sinks.align import Aligner, AlignOptions, release_limit

EV, RES, OTHER = "p.events.loyalty", "p.loyalty.results", "p.notifications"


@dataclass
class Rec:
    topic_: str
    partition_: int
    offset_: int
    ts: int

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)

    def error(self) -> None:
        return None


def recs(topic: str, timestamps: list[int], partition: int = 0, first: int = 0) -> list[Rec]:
    return [Rec(topic, partition, first + i, ts) for i, ts in enumerate(timestamps)]


def backlog(_key: tuple[str, int], _next: int | None) -> int:
    return 10_000  # every partition has plenty left to read


def aligner(**kw: int) -> Aligner:
    return Aligner({EV: RES}, AlignOptions(**kw))


def test_release_limit() -> None:
    assert release_limit(500, 10_000, min_lag=100) == 500  # wait for the partner to reach us
    assert release_limit(None, 10_000, min_lag=100) == -math.inf  # its backlog has not arrived
    assert release_limit(None, 0, min_lag=100) == math.inf  # idle or empty: nothing to wait for
    assert release_limit(500, 99, min_lag=100) == math.inf  # live: little lag, no holding
    assert release_limit(None, None, min_lag=100) == -math.inf  # not known yet: held, by time


def test_events_ahead_wait_for_their_results_and_a_batch_takes_both() -> None:
    al = aligner()
    al.offer(recs(EV, list(range(100, 200))), now=0.0)  # a fetch of events, no results yet
    al.release(0.0, backlog)
    assert al.ready() == 0 and al.held() == 100
    al.offer(recs(RES, list(range(100, 150))), now=0.1)  # results up to 149
    al.release(0.1, backlog)
    taken = al.take(60)
    # the oldest by time of both topics: events and results of 100..129, not 60 events
    assert {(r.topic(), r.ts) for r in taken} == {(t, ts) for t in (EV, RES) for ts in range(100, 130)}
    assert [r.offset() for r in taken if r.topic() == EV] == list(range(30))  # in offset order
    assert al.held() == 50  # events 150..199 wait for results past 149


def test_a_partner_with_no_backlog_holds_nothing() -> None:
    """A result that never comes (results idle or empty) must not block its event."""
    al = aligner()
    al.offer(recs(EV, [100, 101, 102]), now=0.0)
    al.release(0.0, lambda key, nxt: 0)
    assert [r.ts for r in al.take(10)] == [100, 101, 102]


def test_held_records_go_by_time_when_the_partner_does_not_deliver() -> None:
    al = aligner(idle_wait_ms=1000, max_wait_ms=30_000)
    al.offer(recs(EV, [100, 101]), now=0.0)
    al.release(0.0, backlog)
    assert al.ready() == 0
    assert al.next_deadline() == 1.0  # the sink asks the consumer for no longer than this
    al.release(0.5, backlog)
    assert al.ready() == 0
    al.release(1.0, backlog)  # nothing else to write for idle_wait_ms
    assert [r.ts for r in al.take(10)] == [100, 101] and al.expired == 2


def test_never_held_longer_than_max_wait_even_when_busy() -> None:
    al = aligner(idle_wait_ms=1000, max_wait_ms=5000)
    al.offer(recs(EV, [100]), now=0.0)
    al.offer(recs(OTHER, [1, 2, 3]), now=0.0)  # always something else ready: not idle
    al.release(0.0, backlog)
    al.take(1)
    al.release(4.9, backlog)
    assert [r.topic() for r in al.take(10)] == [OTHER, OTHER]
    al.offer(recs(OTHER, [4]), now=5.0)
    al.release(5.0, backlog)
    assert sorted(r.topic() for r in al.take(10)) == [EV, OTHER]


def test_results_ahead_wait_for_their_events() -> None:
    al = aligner()
    al.offer(recs(RES, [100, 200, 300]), now=0.0)
    al.offer(recs(EV, [100, 150]), now=0.0)
    al.release(0.0, backlog)
    assert sorted((r.topic(), r.ts) for r in al.take(10)) == [(EV, 100), (EV, 150), (RES, 100)]
    al.offer(recs(EV, [300], first=2), now=0.1)
    al.release(0.1, backlog)
    assert sorted((r.topic(), r.ts) for r in al.take(10)) == [(EV, 300), (RES, 200), (RES, 300)]


def test_partitions_pair_by_number_and_other_topics_pass() -> None:
    al = aligner()
    al.offer(recs(EV, [100], partition=1) + recs(OTHER, [5]), now=0.0)
    al.offer(recs(RES, [500], partition=0), now=0.0)  # partition 0 is not partition 1's partner
    al.release(0.0, backlog)
    assert [(r.topic(), r.ts) for r in al.take(10)] == [(OTHER, 5)]
    assert al.held() == 2  # each waits for its own partner's backlog to arrive


def test_a_timestamp_going_back_keeps_offset_order() -> None:
    al = aligner()
    al.offer(recs(EV, [100, 90, 110]), now=0.0)
    al.offer(recs(RES, [200]), now=0.0)
    al.release(0.0, backlog)
    taken = al.take(2)  # the record of 90 counts as 100: offsets 0 and 1, never 1 alone
    assert [r.offset() for r in taken if r.topic() == EV] == [0, 1]


def test_too_much_held_pauses_the_partition_until_half_is_released() -> None:
    al = aligner(max_held=10)
    al.offer(recs(EV, list(range(100, 112))), now=0.0)
    al.release(0.0, backlog)
    assert al.pauses() == ([(EV, 0)], [])
    assert al.pauses() == ([], [])  # paused once
    al.offer(recs(RES, list(range(100, 106))), now=0.1)  # releases events 100..105: 6 held
    al.release(0.1, backlog)
    assert al.pauses() == ([], [])
    al.offer(recs(RES, [106], first=6), now=0.2)
    al.release(0.2, backlog)
    assert al.pauses() == ([], [(EV, 0)])


def test_forget_drops_what_a_rebalance_takes_away() -> None:
    al = aligner()
    al.offer(recs(EV, [100]) + recs(EV, [100], partition=1) + recs(OTHER, [1], partition=1), now=0.0)
    al.release(0.0, lambda key, nxt: 0)
    al.forget([(EV, 0), (OTHER, 1)])
    assert [(r.topic(), r.partition()) for r in al.take(10)] == [(EV, 1)]
    al.offer(recs(EV, [100]), now=0.0)
    al.forget()
    assert al.ready() == 0 and al.held() == 0


def test_time_spent_handing_a_batch_over_is_not_idle() -> None:
    al = aligner(idle_wait_ms=1000, max_wait_ms=30_000)
    al.offer(recs(EV, [100]), now=0.0)
    al.release(0.0, backlog)
    al.busy()  # the writer took 5 s to accept the batch
    al.release(5.0, backlog)
    assert al.ready() == 0  # idle only from now on
    al.release(6.0, backlog)
    assert al.ready() == 1
