#!/usr/bin/env bash
# Build the images: deploy/docker/build.sh [base|app|kafka|postgres|all]...
#
#   base      loyalty-debian:bookworm (debootstrap --variant=minbase, docker import) and
#             loyalty-python:3.11-bookworm (base.Dockerfile: python3.11, venv, tini from Debian)
#   app       $LOYALTY_IMAGE (loyalty-engine:dev): every service, deploy/docker/Dockerfile
#   kafka     $KAFKA_IMAGE (loyalty-kafka:dev): kafka.Dockerfile, jars from ensure_jars()
#   postgres  $POSTGRES_IMAGE (loyalty-postgres:dev): postgres.Dockerfile
#
# The base images: BASE / DEBIAN_BASE when set; else the public python:3.11-slim-bookworm and
# debian:bookworm-slim when present or pullable; else the local Debian-built ones (made by
# `base` the first time). The context is streamed as a tar of only what an image needs (never
# .local/), plus the host's CA bundle for TLS-intercepting proxies (build-ca/ca.pem, first
# stage only). Docker's layer cache makes a rebuild with unchanged inputs take seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

LOYALTY_IMAGE=${LOYALTY_IMAGE:-loyalty-engine:dev}
KAFKA_IMAGE=${KAFKA_IMAGE:-loyalty-kafka:dev}
POSTGRES_IMAGE=${POSTGRES_IMAGE:-loyalty-postgres:dev}
LOCAL_DEBIAN=loyalty-debian:bookworm
LOCAL_PYTHON=loyalty-python:3.11-bookworm
PUBLIC_PYTHON=python:3.11-slim-bookworm
PUBLIC_DEBIAN=debian:bookworm-slim
BUILD_NETWORK=${BUILD_NETWORK:-host}  # RUN steps reach Debian and PyPI like the host does
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
CA=${BUILD_CA:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}

say() { printf '%s %s\n' "[build $(date +%T)]" "$*" >&2; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# An image we can build FROM: present, or pulled from a reachable registry.
usable() {
  have_image "$1" && return 0
  timeout 120 docker pull -q "$1" >/dev/null 2>&1
}

debian_rootfs_image() {
  have_image "$LOCAL_DEBIAN" && return 0
  command -v debootstrap >/dev/null || { say "debootstrap is not installed"; return 1; }
  local dir
  dir=$(mktemp -d)
  say "debootstrap --variant=minbase bookworm (no image registry: the base comes from Debian)"
  debootstrap --variant=minbase bookworm "$dir" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
    > "$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; rm -rf "$dir"; return 1; }
  cat > "$dir/etc/apt/sources.list" <<'SOURCES'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | docker import -c 'CMD ["bash"]' - "$LOCAL_DEBIAN" >/dev/null
  rm -rf "$dir" "$dir.log"
  say "imported $LOCAL_DEBIAN"
}

build_base() {
  debian_rootfs_image
  if ! have_image "$LOCAL_PYTHON" || [ "${REBUILD_BASE:-}" = 1 ]; then
    say "building $LOCAL_PYTHON"
    docker build -q --network "$BUILD_NETWORK" --build-arg "DEBIAN=$LOCAL_DEBIAN" \
      -t "$LOCAL_PYTHON" - < deploy/docker/base.Dockerfile >/dev/null
  fi
}

python_base() {
  if [ -n "${BASE:-}" ]; then echo "$BASE"
  elif usable "$PUBLIC_PYTHON"; then echo "$PUBLIC_PYTHON"
  else build_base >&2 && echo "$LOCAL_PYTHON"
  fi
}

debian_base() {
  if [ -n "${DEBIAN_BASE:-}" ]; then echo "$DEBIAN_BASE"
  elif usable "$PUBLIC_DEBIAN"; then echo "$PUBLIC_DEBIAN"
  else debian_rootfs_image >&2 && echo "$LOCAL_DEBIAN"
  fi
}

# context PATH... : a tar on stdout with the repository paths given, the CA bundle and (for
# kafka) the jars; no caches, no .local/.
context() {
  local extra=()
  if [ -f "$CA" ]; then
    extra+=(-C "$(dirname "$CA")" --transform "s|^$(basename "$CA")\$|deploy/docker/build-ca/ca.pem|"
            "$(basename "$CA")")
  fi
  if [ -n "${KAFKA_LIBS:-}" ]; then
    extra+=(-C "$(dirname "$KAFKA_LIBS")" --transform "s|^$(basename "$KAFKA_LIBS")|kafka-libs|"
            "$(basename "$KAFKA_LIBS")")
  fi
  tar -c --exclude=__pycache__ --exclude='*.pyc' --exclude=.pytest_cache --exclude='*.egg-info' \
    --owner=0 --group=0 -C "$ROOT" "$@" "${extra[@]}"
}

build() {  # build IMAGE DOCKERFILE BASE_ARG=VALUE PATH...
  local image=$1 dockerfile=$2 base=$3
  shift 3
  local began=$SECONDS log
  log=$(mktemp)
  say "building $image from ${base#*=} ($dockerfile)"
  if ! context "$@" | docker build --network "$BUILD_NETWORK" --build-arg "$base" \
      -f "$dockerfile" -t "$image" - > "$log" 2>&1; then
    tail -40 "$log" >&2
    rm -f "$log"
    say "building $image failed"
    return 1
  fi
  local steps cached
  steps=$(grep -c '^Step ' "$log" || true)
  cached=$(grep -c 'Using cache' "$log" || true)
  rm -f "$log"
  # The image this tag pointed at before, now untagged: drop it, so repeated builds (CI) do not
  # fill the disk. Only ours (label loyalty.image), only dangling ones; the layer cache stays.
  docker image prune -f --filter label=loyalty.image >/dev/null 2>&1 || true
  say "$image built in $((SECONDS - began))s ($steps steps, $cached from the cache)"
}

# The top-level package directories of pyproject.toml ([tool.setuptools.packages.find] include).
packages() {
  "$PYTHON" - <<'PY'
import pathlib, tomllib
found = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
tops = {pattern.split(".")[0].rstrip("*") for pattern in found["include"]}
print(" ".join(sorted(top for top in tops if pathlib.Path(top, "__init__.py").is_file())))
PY
}

app() {
  local base pkgs
  base=$(python_base)
  pkgs=$(packages)
  # shellcheck disable=SC2086 # a list of directory names
  build "$LOYALTY_IMAGE" deploy/docker/Dockerfile "BASE=$base" pyproject.toml examples $pkgs
}

kafka() {
  local base
  base=$(debian_base)
  KAFKA_LIBS=$("$PYTHON" -c "from deploy.local.kafka import ensure_jars; print(ensure_jars())") \
    build "$KAFKA_IMAGE" deploy/docker/kafka.Dockerfile "BASE=$base" deploy/docker
}

postgres() {
  local base
  base=$(debian_base)
  build "$POSTGRES_IMAGE" deploy/docker/postgres.Dockerfile "BASE=$base" deploy/docker
}

[ $# -gt 0 ] || set -- all
for target in "$@"; do
  case $target in
    base) build_base ;;
    app) app ;;
    kafka) kafka ;;
    postgres) postgres ;;
    all) app; kafka; postgres ;;
    *) echo "usage: $0 [base|app|kafka|postgres|all]..." >&2; exit 2 ;;
  esac
done
