#!/usr/bin/env bash
# make bench-smoke: a freshly started meterd takes a small batched load from `meterd loadgen`
# and stores every acknowledged reading (--verify); the baselines of make bench build and run.
# Takes a few seconds; part of make test.
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
# the baselines make bench compiles must still build and run (cc as in bench/run.sh, and strict)
cc -O2 -Wall -Wextra -Werror -o "$work/mhd_baseline" bench/mhd_baseline.c \
  $(pkg-config --cflags --libs libmicrohttpd)
cc -O2 -Wall -Wextra -Werror -o "$work/fsync_baseline" bench/fsync_baseline.c
"$work/fsync_baseline" "$work/fsync.tmp" 0.2 500 200 > "$work/fsync.json"
/usr/bin/python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))
assert d["count"] > 10 and 0 < d["p50_ms"] <= d["p99_ms"] <= d["max_ms"], d' "$work/fsync.json"
[ ! -e "$work/fsync.tmp" ] || { echo "bench-smoke: fsync_baseline left its file"; exit 1; }
echo keep > "$work/keep"  # it overwrites and removes its file, so it must refuse an existing one
if "$work/fsync_baseline" "$work/keep" 0.1 100 2>/dev/null || [ "$(cat "$work/keep")" != keep ]; then
  echo "bench-smoke: fsync_baseline did not refuse an existing file"; exit 1
fi
echo "bench-smoke: ok"
