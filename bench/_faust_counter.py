"""faust-streaming doing the runtime benchmark's stateful work: a per-key count/sum table.

Run by bench/runtime.py as `python bench/_faust_counter.py worker` with BENCH_* env vars.
"""

from __future__ import annotations

import os

import faust

PREFIX = os.environ["BENCH_PREFIX"]
app = faust.App(
    f"{PREFIX}faust-counter",
    broker=f"kafka://{os.environ['KAFKA_BOOTSTRAP_SERVERS']}",
    store="memory://",
    processing_guarantee=os.environ.get("BENCH_FAUST_GUARANTEE", "exactly_once"),
    topic_partitions=int(os.environ.get("TOPIC_PARTITIONS", "6")),
    web_enabled=False,
)
source = app.topic(f"{PREFIX}counter.input", key_type=str, value_serializer="json")
sink = app.topic(f"{PREFIX}faust.output", key_type=str, value_serializer="json")
totals = app.Table(
    "totals", default=lambda: [0, 0.0], partitions=int(os.environ.get("TOPIC_PARTITIONS", "6"))
)


@app.agent(source)
async def count(stream):  # noqa: ANN001 - faust's agent signature
    async for key, value in stream.items():
        count_, sum_ = totals[key]
        totals[key] = [count_ + 1, sum_ + value.get("amount", 0)]
        await sink.send(key=key, value={"key": key, "count": count_ + 1, "ts": value.get("ts")})


if __name__ == "__main__":
    app.main()
