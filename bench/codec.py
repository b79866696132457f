"""Avro codec: encode and decode time per record, generated code (schemas/avro_compiled.py, what
`Codec` uses) against fastavro's schemaless writer/reader, in the same run and process.

    python -m bench.codec [--number 10000] [--repeat 5] [--schema Event ...]

Both sides do the whole `Codec.encode` / `Codec.decode` (single-object header included), so the
figures are what a processor pays per record. Best of `--repeat` runs of `--number` records each.
No Kafka needed.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable

from fastavro import schemaless_reader, schemaless_writer

from schemas.codec import MAGIC, Codec

DETAIL = json.dumps(
    {
        "rules_applied": ["purchase-points", "weekend-bonus"],
        "accumulations": [{"wallet": "points", "amount": 42.5, "expires_at": 1767225600000}],
        "wallet": {"points": 1234.5},
        "tier": "GOLD",
    }
)

RECORDS: dict[str, dict] = {
    "Event": {
        "id": "5f0c6a8e-2b8d-5c1e-9a3f-0c2d4e6f8a1b",
        "customer_id": "cust-1234",
        "type": "PURCHASE",
        "reference": "order-98765-a1b2c3",
        "issued_at": 1_767_225_600_123,
        "received_at": 1_767_225_600_456,
        "properties": json.dumps({"amount": 57, "category": "books", "sku": "sku-42"}),
        "tags": ["web"],
        "redeem": [{"reward_id": "rw-1", "amount": 10.0}],
    },
    "Result": {
        "event_id": "5f0c6a8e-2b8d-5c1e-9a3f-0c2d4e6f8a1b",
        "customer_id": "cust-1234",
        "type": "PURCHASE",
        "status": "RESOLVED",
        "points": 42.5,
        "config_version": 3,
        "processed_at": 1_767_225_600_789,
        "detail": DETAIL,
    },
    "Notification": {
        "id": "wh-5f0c6a8e-1",
        "event": "CUSTOMER_ACCUMULATION",
        "customer_id": "cust-1234",
        "data": DETAIL,
        "created_at": 1_767_225_600_789,
        "config_version": 3,
        "endpoint_id": "ep-1",
        "attempt": 2,
        "not_before": 1_767_225_660_789,
    },
    "Profile": {
        "customer_id": "cust-1234",
        "tier": "GOLD",
        "updated_at": 1_767_225_600_789,
        "config_version": 3,
        "profile": json.dumps(
            {"consent": {"email": True}, "metrics": {"orders": 12}, "traits": {"city": "Zürich"}}
        ),
    },
    "Membership": {
        "audience_id": "aud-big-spenders",
        "customer_id": "cust-1234",
        "action": "ENTER",
        "reason": "rule matched",
        "at": 1_767_225_600_789,
        "config_version": 3,
    },
    "JourneyActivity": {
        "id": "ja-1",
        "journey_id": "welcome",
        "instance_id": "inst-1",
        "customer_id": "cust-1234",
        "kind": "TRANSITION",
        "from_node": "start",
        "to_node": "wait-1d",
        "at": 1_767_225_600_789,
        "data": "{}",
    },
    "DeliveryAttempt": {
        "webhook_id": "wh-5f0c6a8e-1",
        "endpoint_id": "ep-1",
        "event": "CUSTOMER_ACCUMULATION",
        "customer_id": "cust-1234",
        "attempt": 1,
        "status_code": 200,
        "latency_ms": 12.5,
        "outcome": "DELIVERED",
        "at": 1_767_225_600_789,
    },
}


def best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Best time per call, in microseconds, of `repeat` runs of `number` calls."""
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, time.perf_counter() - began)
    return best / number * 1e6


def fastavro_encode(codec: Codec, name: str, record: dict) -> bytes:
    """What `Codec.encode` did before the generated writers."""
    buf = io.BytesIO()
    buf.write(MAGIC)
    buf.write(codec._fingerprint[name])  # noqa: SLF001 - the benchmark mirrors the old code path
    schemaless_writer(buf, codec.schema(name), record)
    return buf.getvalue()


def fastavro_decode(codec: Codec, name: str, data: bytes) -> dict:
    """What `Codec.decode(data, name)` did before the generated readers (writer == reader)."""
    return schemaless_reader(io.BytesIO(data[10:]), codec.schema(name), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.codec", description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=10_000, help="records per timed run")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs; the best is kept")
    parser.add_argument("--schema", action="append", choices=sorted(RECORDS), help="default: all")
    args = parser.parse_args(argv or [])
    codec = Codec()
    header = f"{'schema':<16}{'bytes':>6}  {'encode fastavro':>15}{'compiled':>10}{'x':>6}"
    header += f"  {'decode fastavro':>15}{'compiled':>10}{'x':>6}"
    print(header)
    print("-" * len(header))
    for name in args.schema or list(RECORDS):
        record = RECORDS[name]
        data = codec.encode(name, record)
        if data != fastavro_encode(codec, name, record) or codec.decode(data, name) != fastavro_decode(
            codec, name, data
        ):
            print(f"{name}: compiled and fastavro disagree", file=sys.stderr)
            return 1
        enc_f = best_us(lambda n=name, r=record: fastavro_encode(codec, n, r), args.number, args.repeat)
        enc_c = best_us(lambda n=name, r=record: codec.encode(n, r), args.number, args.repeat)
        dec_f = best_us(lambda n=name, d=data: fastavro_decode(codec, n, d), args.number, args.repeat)
        dec_c = best_us(lambda n=name, d=data: codec.decode(d, n), args.number, args.repeat)
        print(
            f"{name:<16}{len(data):>6}  {enc_f:>12.2f} us{enc_c:>7.2f} us{enc_f / enc_c:>5.1f}x"
            f"  {dec_f:>12.2f} us{dec_c:>7.2f} us{dec_f / dec_c:>5.1f}x",
            flush=True,
        )
    print(f"(best of {args.repeat} x {args.number} records; whole Codec.encode/decode incl. header)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
