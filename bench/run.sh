#!/usr/bin/env bash
# make bench: ingest throughput against baselines on this machine, written to docs/benchmarks.md.
# Everything runs on 127.0.0.1; each number comes from a command printed next to it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --bench
make --no-print-directory all >/dev/null
BIN=$PWD/build/meterd
DUR=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-64}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; nginx -c $work/nginx.conf -s stop 2>/dev/null; rm -rf "$work"' EXIT
free_port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; return 1; }
rps() { grep 'Requests/sec' | awk '{print $2}'; }
lat() { grep -E '^ +Latency' | awk '{print $2}'; }

# Baselines: nginx `return 204;` (1 worker) and libmicrohttpd with a trivial handler.
NGX=$(free_port); MHD=$(free_port); MD=$(free_port)
cat > "$work/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $work;
  server { listen 127.0.0.1:$NGX; location / { return 204; } } }
NGINX
nginx -c "$work/nginx.conf" & 
cc -O2 -o "$work/mhd_baseline" bench/mhd_baseline.c $(pkg-config --cflags --libs libmicrohttpd)
"$work/mhd_baseline" "$MHD" 2 &
"$BIN" serve --http-addr "127.0.0.1:$MD" --data-dir "$work/data" --log-level warn 2>"$work/meterd.log" &
wait_port "$NGX"; wait_port "$MHD"; wait_port "$MD"

run() { # name port script extra-env
  local out; out=$(env ${4:-} wrk -t2 -c"$CONNS" -d"${DUR}s" --latency -s "bench/$3" "http://127.0.0.1:$2/api/v1/readings")
  echo "$out" > "$work/$1.txt"
  echo "$out" | rps
}
ngx_rps=$(run nginx "$NGX" post_single.lua)
mhd_rps=$(run mhd "$MHD" post_single.lua)
single_rps=$(run single "$MD" post_single.lua)
b1k_rps=$(BATCH=1000 run batch1k "$MD" post_batch.lua "BATCH=1000")
# let the worker catch up, then measure disk use per stored reading
for _ in $(seq 600); do
  d=$(curl -s "http://127.0.0.1:$MD/metrics" | awk '/^meterd_queue_depth /{print $2}')
  [ "$d" = "0" ] && break; sleep 0.5
done
stored=$(curl -s "http://127.0.0.1:$MD/metrics" | awk '/^meterd_readings_stored_total /{print $2}')
db_bytes=$(du -cb "$work"/data/meterd.db* | tail -1 | awk '{print $1}')
p50=$(grep -E '^ +50%' "$work/single.txt" | awk '{print $2}'); p99=$(grep -E '^ +99%' "$work/single.txt" | awk '{print $2}')

/usr/bin/python3 - "$ngx_rps" "$mhd_rps" "$single_rps" "$b1k_rps" "$stored" "$db_bytes" "$p50" "$p99" "$DUR" "$CONNS" <<'PY'
import sys, subprocess, datetime, platform, os
ngx, mhd, single, b1k, stored, dbb, p50, p99, dur, conns = sys.argv[1:]
ngx, mhd, single, b1k = map(float, (ngx, mhd, single, b1k))
commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":",1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
row = f"""
## {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC — commit {commit}

Machine: {os.cpu_count()} cores ({cpu}), kernel {platform.release()}. Client: wrk on the same machine,
`-t2 -c{conns} -d{dur}s`, keep-alive, all servers on 127.0.0.1. Command: `make bench`.

| what | result | vs baseline |
|---|---|---|
| nginx `return 204;` (1 worker), single-reading POST | {ngx:,.0f} req/s | baseline |
| libmicrohttpd trivial handler (bench/mhd_baseline.c) | {mhd:,.0f} req/s | {mhd/ngx:.2f}× nginx |
| meterd single-reading POST, durable (fsync before 202) | {single:,.0f} req/s = {single:,.0f} readings/s, p50 {p50}, p99 {p99} | {single/ngx:.2f}× nginx |
| meterd batches of 1,000 readings (JSON), durable | {b1k:,.0f} req/s = {b1k*1000:,.0f} readings/s | |
| SQLite bytes per stored reading | {int(dbb)/max(1,int(float(stored))):.1f} B ({int(float(stored)):,} readings, {int(dbb):,} B) | |
"""
path = "docs/benchmarks.md"
head = "# Benchmarks\n\nEach section is one `make bench` run (bench/run.sh); newest last. Numbers from other runs are not comparable unless the machine matches.\n"
text = open(path).read() if os.path.exists(path) else head
open(path, "w").write(text + row)
print(row)
PY
