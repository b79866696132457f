"""The compose stack's program job: `loyalty config apply FILE`, with the stack's plain-HTTP
webhook hosts allowed.

In the compose network the demo receiver is `http://receiver:8080`: plain HTTP on a private
address, which the delivery processor's SSRF guard refuses unless the program lists the host in
`delivery.allow_http_hosts` (docs/delivery.md). So that examples/program.yaml works unchanged, this
job adds the hosts named in WEBHOOK_HTTP_HOSTS (comma-separated; compose.yaml sets `receiver`) to
that list before publishing; with WEBHOOK_HTTP_HOSTS empty it is exactly `loyalty config apply`.

    python -m deploy.compose.program FILE
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import yaml

from deploy.cli import apply_config
from schemas.program import Delivery


def with_http_hosts(program: dict, hosts: list[str]) -> dict:
    """`program` with `hosts` appended to delivery.allow_http_hosts (its default kept)."""
    if not hosts:
        return program
    delivery = dict(program.get("delivery") or {})
    allowed = list(delivery.get("allow_http_hosts", Delivery().allow_http_hosts))
    delivery["allow_http_hosts"] = allowed + [h for h in hosts if h not in allowed]
    return {**program, "delivery": delivery}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m deploy.compose.program FILE", file=sys.stderr)
        return 2
    hosts = [h.strip() for h in os.environ.get("WEBHOOK_HTTP_HOSTS", "").split(",") if h.strip()]
    if not hosts:
        return apply_config(args[0])
    try:
        program = yaml.safe_load(Path(args[0]).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        print(f"program: {args[0]}: {exc}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(args[0]).name
        path.write_text(yaml.safe_dump(with_http_hosts(program, hosts), sort_keys=False))
        print(f"program: {args[0]} with plain http allowed for {', '.join(hosts)}")
        return apply_config(str(path))


if __name__ == "__main__":
    raise SystemExit(main())
