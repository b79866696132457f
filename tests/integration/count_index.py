"""A local index of the counter's `totals` for the restore tests (local_index.py): `#<key>` ->
its count, derived from each restored total."""

from __future__ import annotations

import orjson


def is_local(key: bytes) -> bool:
    return key.startswith(b"#")


def derived(key: bytes, value: bytes | None) -> tuple[bytes, bytes | None] | None:
    return b"#" + key, None if value is None else str(orjson.loads(value)["count"]).encode()
