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
)
if [ "${1:-}" = "--bench" ]; then pkgs+=(wrk nginx-light); fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
