"""Prometheus metrics of the sink (process-wide, shared by every Sink in the process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROWS = Counter("sink_rows_written_total", "Rows upserted into PostgreSQL", ["table"])
RECORDS = Counter("sink_records_total", "Kafka records consumed and committed", ["topic"])
BATCHES = Counter("sink_batches_total", "Batches committed to PostgreSQL")
BATCH_SECONDS = Histogram(
    "sink_batch_seconds",
    "Latency of one batch transaction (rows + offsets)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_RECORDS = Histogram(
    "sink_batch_records", "Records per committed batch", buckets=(1, 10, 100, 1000, 5000, 20000)
)
# the lag is the shared consumer_lag{consumer="sink"} (plumbing/observability.py), and
# the letters the relay publishes to sink.dlq count in the shared
# stream_dead_letters_total{processor="sink",reason} (sinks/dlq_relay.py)
MERGED = Counter(
    "sink_events_merged_total",
    "events rows inserted together with their result in one batch (no later update)",
)
DB_ERRORS = Counter("sink_db_errors_total", "Failed batch transactions or offset reads")
FENCED = Counter("sink_fenced_total", "Batches abandoned because stored offsets moved")
REJECTS = Counter(
    "sink_rejects_total",
    "Records or rows quarantined in sink_rejects (table 'none': undecodable or unmappable)",
    ["table"],
)
DB_UP = Gauge("sink_db_up", "1 when the last database operation succeeded")
