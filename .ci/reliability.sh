#!/usr/bin/env bash
# CI stage: the reliability tests (marker `reliability`, but not the broker restarts): processes
# killed with SIGKILL mid-stream, instances joining and leaving, a slow or dead webhook receiver,
# each under load and checked exact afterwards. About 4 minutes, so a stage of its own after
# `make test`, which stays well inside its 20-minute budget on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
started=$(date +%s)
make test-reliability PYTHON="$PYTHON"
echo "reliability stage: $(( $(date +%s) - started ))s"
