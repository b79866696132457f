#!/bin/sh
# The image's entry point: `loyalty "$@"`, with STATE_DIR defaulting to one directory per
# container (its hostname) under the state volume, so replicas sharing a named volume never open
# the same RocksDB store.
set -eu
: "${STATE_DIR:=${STATE_ROOT:-/var/lib/loyalty/state}/$(hostname)}"
export STATE_DIR
exec loyalty "$@"
