#!/usr/bin/env bash
# CI stage: the broker-restart tests (tests/reliability/test_broker_restart*.py). Each stops its
# own broker three times under load, for up to 42 s, and checks every processor healthy and the
# results exact afterwards; minutes of outages, so a stage of its own after `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
started=$(date +%s)
make test-broker-restarts PYTHON="$PYTHON"
echo "broker-restart stage: $(( $(date +%s) - started ))s"
