#!/usr/bin/env bash
# CI stage: the compose stack on a real Docker engine (tests/deploy/test_compose.py).
# Installs what is missing (docker.io, debootstrap, a compose CLI), starts dockerd when no engine
# answers (and stops it again at the end), builds the images (Docker's layer cache keeps them
# between runs on the same machine: a rebuild with unchanged sources takes seconds), then runs
# the test with REQUIRE_DOCKER=1, so a missing engine fails instead of skipping.
set -euo pipefail
export CI=true
exec </dev/null
cd "$(dirname "$0")/.."

COMPOSE_VERSION=${COMPOSE_VERSION:-v2.40.3}  # built from the Go module proxy when missing
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3 || command -v python)}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
stage_began=$SECONDS
step() { echo "[compose-stage +$((SECONDS - stage_began))s] $*"; }

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v mvn >/dev/null || missing+=(maven)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
if ((${#missing[@]})); then
  step "installing ${missing[*]}"
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# compose v2 (a docker CLI plugin): Debian bookworm has only the old Python docker-compose 1.29.
if ! docker compose version >/dev/null 2>&1; then
  plugins=/usr/local/lib/docker/cli-plugins
  GO=$(command -v go || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || true)
  if [ -n "$GO" ]; then
    step "building docker compose $COMPOSE_VERSION with Go (once per machine)"
    work=$(mktemp -d)
    (
      cd "$work"
      printf 'module composebuild\n\ngo 1.24\n' > go.mod
      "$GO" get "github.com/docker/compose/v2/cmd@$COMPOSE_VERSION"
      "$GO" build -trimpath -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
        -o docker-compose github.com/docker/compose/v2/cmd
    )
    $SUDO install -D -m 0755 "$work/docker-compose" "$plugins/docker-compose"
    rm -rf "$work"
  else
    step "no Go toolchain: installing Debian's docker-compose 1.29"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose
  fi
fi

started_dockerd=""
if ! docker info >/dev/null 2>&1; then
  step "starting dockerd"
  $SUDO sh -c 'dockerd > /tmp/ci-dockerd.log 2>&1 & echo $! > /tmp/ci-dockerd.pid'
  started_dockerd=$(cat /tmp/ci-dockerd.pid)
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -30 /tmp/ci-dockerd.log; exit 1; }
fi
stop_dockerd() {
  if [ -n "$started_dockerd" ]; then
    $SUDO kill "$started_dockerd" 2>/dev/null || true
  fi
}
trap stop_dockerd EXIT

"$PYTHON" -m pip install -q --root-user-action=ignore -e '.[dev]'
step "building the images"
PYTHON="$PYTHON" deploy/docker/build.sh all
step "running tests/deploy/test_compose.py"
REQUIRE_DOCKER=1 LOYALTY_COMPOSE_BUILD=0 "$PYTHON" -m pytest tests/deploy/test_compose.py -q -rs -p no:cacheprovider
step "done"
