#!/usr/bin/env bash
# CI stage: the Prometheus alerting rules (deploy/prometheus). Installs Debian's `prometheus`
# package when promtool is missing (about 20 s), then checks the rules and runs their unit tests.
set -euo pipefail
exec </dev/null
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "prometheus.sh: installing promtool (Debian package prometheus)"
    start=$SECONDS
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
    echo "prometheus.sh: promtool installed in $((SECONDS - start))s"
fi
promtool --version | head -1

promtool check rules deploy/prometheus/alerts.yaml
promtool test rules deploy/prometheus/tests/*.yaml
