#!/opt/loyalty/bin/python3
"""Docker HEALTHCHECK: exit 0 when GET http://127.0.0.1:$HEALTH_PORT/healthz answers 200."""

import os
import sys
from urllib.request import urlopen

port = os.environ.get("HEALTH_PORT") or os.environ.get("METRICS_PORT", "9100")
path = os.environ.get("HEALTH_PATH", "/healthz")
try:
    with urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
    print(f"GET :{port}{path}: {exc}", file=sys.stderr)
    sys.exit(1)
