"""Sink.released_by_time: how many records the aligner let go by time, read-only, for the
benchmark to print (bench/sink.py read the private sink._aligner before)."""

import pytest

from schemas.settings import Settings
from sinks.align import AlignOptions
from sinks.sink import Sink, SinkOptions
from tests.unit.test_sink_align import backlog, recs

SETTINGS = Settings(
    kafka_bootstrap_servers="127.0.0.1:1", topic_prefix="p.", database_url="postgresql://127.0.0.1:1/x"
)


def sink(**align) -> Sink:
    return Sink(SETTINGS, SinkOptions(dlq_relay=False, align=AlignOptions(**align)))  # not started


def test_a_sink_that_does_not_align_has_no_figure():
    assert sink(enabled=False).released_by_time is None


def test_it_counts_the_records_released_by_time_and_cannot_be_set():
    s = sink(idle_wait_ms=1000, max_wait_ms=30_000)
    assert s.released_by_time == 0
    aligner = s._aligner  # driven through its own interface, as the sink's loop does
    aligner.offer(recs("p.events.loyalty", [100, 101]), now=0.0)
    aligner.release(0.0, backlog)
    assert s.released_by_time == 0  # held: the results have a backlog that has not arrived
    aligner.release(31.0, backlog)
    assert s.released_by_time == 2
    with pytest.raises(AttributeError):
        s.released_by_time = 0
