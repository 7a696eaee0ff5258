#!/usr/bin/env bash
# Installs the Debian packages meterd needs to build, run and test.
# Idempotent: only what is missing is installed. Usage: scripts/deps.sh [--bench]
set -euo pipefail

pkgs=(
  build-essential pkg-config curl ca-certificates
  libmicrohttpd-dev libjansson-dev libsqlite3-dev zlib1g-dev
  libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev
  libcmocka-dev clang libclang-rt-14-dev
  librabbitmq-dev libhiredis-dev libpq-dev libgrpc-dev
  rabbitmq-server redis-server postgresql-15
  python3 python3-pytest python3-requests python3-protobuf python3-yaml sqlite3
  python3-pika python3-redis python3-psycopg2 python3-grpcio python3-grpc-tools
  chromium
)
if [ "${1:-}" = "--bench" ]; then pkgs+=(wrk nginx-light); fi

# uPlot and swagger-ui-dist (embedded into the binary) and playwright-core (browser test) come
# from npm as pinned by package-lock.json, into node_modules/ (never committed); only when
# missing, so later builds work offline. Needs Node.js 20 + npm (not from Debian's packages).
npm_deps() {
  local root
  root="$(cd "$(dirname "$0")/.." && pwd)"
  if [ ! -d "$root/node_modules/uplot" ] || [ ! -d "$root/node_modules/swagger-ui-dist" ] ||
     [ ! -d "$root/node_modules/playwright-core" ]; then
    echo "deps: npm ci (uplot, swagger-ui-dist, playwright-core)" >&2
    (cd "$root" && npm ci --ignore-scripts --no-audit --no-fund >/dev/null)
  fi
}

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  npm_deps
  exit 0
fi
echo "deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
npm_deps
