"""The smallest useful processor: a per-key count and sum, with a timer per key.

Used by the docs (docs/runtime.md), the reliability tests and the runtime benchmark.
Input `counter.input` carries JSON {"amount": number} (and an optional "ts", passed through
for latency measurements, and "seq", passed through so a test can tell which input an output
came from); every record updates the key's
{"count", "sum"} and emits it to `counter.output`. A record with {"remind_in_ms": N} also
schedules a timer that emits {"reminder": true} for that key once.
"""

from __future__ import annotations

from processors.runtime.api import Context, Processor, Record, Timer
from schemas.topics import TopicSpec

INPUT = "counter.input"
OUTPUT = "counter.output"
TOPICS = [TopicSpec(INPUT, None), TopicSpec(OUTPUT, None)]
PASSTHROUGH = ("ts", "seq")  # input fields copied to the output


class CounterProcessor(Processor):
    name = "counter"
    inputs = [INPUT]
    outputs = [OUTPUT]
    stores = ["totals"]

    def process(self, ctx: Context, record: Record) -> None:
        totals = ctx.store("totals")
        state = totals.get(record.key, {"count": 0, "sum": 0})
        state["count"] += 1
        state["sum"] += record.value.get("amount", 0)
        totals.put(record.key, state)
        passthrough = {k: record.value[k] for k in PASSTHROUGH if k in record.value}
        ctx.emit(OUTPUT, record.key, {"key": record.key, **state, **passthrough})
        if "remind_in_ms" in record.value:
            ctx.schedule(ctx.now() + record.value["remind_in_ms"], record.key, {}, f"remind-{record.key}")

    def on_timer(self, ctx: Context, timer: Timer) -> None:
        ctx.emit(OUTPUT, timer.key, {"key": timer.key, "reminder": True, "at": timer.at})


def build() -> Processor:
    return CounterProcessor()


if __name__ == "__main__":  # python -m processors.runtime.example --state-dir ... --instance-id ...
    import sys

    from processors.runtime.service import run_service

    sys.exit(run_service(build(), sys.argv[1:]))
