#!/usr/bin/env bash
# CI stage: the dashboard's browser tests in Debian's chromium driven by Playwright.
# Installs chromium (apt) and playwright (pip) when missing; never downloads a browser through
# Playwright (`playwright install` cannot work here). Needs DATABASE_URL (or starts a throwaway
# PostgreSQL like the rest of the suite). Screenshots land in .local/screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

if [ ! -x /usr/bin/chromium ]; then
  echo "browser stage: installing chromium"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi
if ! "$PYTHON" -c "import playwright.sync_api" 2>/dev/null; then
  echo "browser stage: installing playwright"
  "$PYTHON" -m pip install -q --root-user-action=ignore playwright
fi
"$PYTHON" -c "import psycopg_pool" 2>/dev/null || "$PYTHON" -m pip install -q --root-user-action=ignore -e .

started=$(date +%s)
REQUIRE_BROWSER=1 "$PYTHON" -m pytest tests/browser -q "$@"
echo "browser stage: $(( $(date +%s) - started ))s; screenshots in .local/screenshots/"
