"""The ceiling for Python here: a bare confluent-kafka consume -> produce loop, no state, no EOS.

Run by bench/runtime.py as a subprocess with BENCH_* env vars.
"""

from __future__ import annotations

import os
import signal

import orjson
from confluent_kafka import Consumer, Producer


def main() -> None:
    prefix = os.environ["BENCH_PREFIX"]
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"{prefix}bare", "auto.offset.reset": "earliest"}
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "partitioner": "murmur2_random"})
    consumer.subscribe([f"{prefix}counter.input"])
    out = f"{prefix}bare.output"
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    while running:
        for msg in consumer.consume(500, 0.01):
            if msg.error():
                continue
            value = orjson.loads(msg.value())
            body = orjson.dumps({"key": msg.key().decode(), "ts": value.get("ts")})
            while True:
                try:
                    producer.produce(out, body, msg.key())
                    break
                except BufferError:  # the queue drains as the broker acknowledges
                    producer.poll(0.05)
        producer.poll(0)
    producer.flush(10)
    consumer.close()


if __name__ == "__main__":
    main()
