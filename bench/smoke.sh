#!/usr/bin/env bash
# make bench-smoke: a freshly started meterd takes a small batched load from `meterd loadgen`
# and stores every acknowledged reading (--verify). Takes a few seconds; part of make test.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${METERD_BIN:-$PWD/build/meterd}
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=$(/usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
"$BIN" serve --http-addr "127.0.0.1:$port" --data-dir "$work/data" --log-level warn 2>"$work/meterd.log" &
pid=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/ready" && break; sleep 0.1; done
if ! "$BIN" loadgen --url "http://127.0.0.1:$port" --format batch --batch 100 --count 200 \
    --connections 8 --threads 1 --verify --verify-timeout 15 --no-progress; then
  echo "bench-smoke: FAILED (meterd log follows)"; cat "$work/meterd.log"; exit 1
fi
echo "bench-smoke: ok"
