#!/usr/bin/env bash
# make bench: ingest throughput, latency, lag, disk and memory of meterd on this machine,
# appended as one section to docs/benchmarks.md. Everything runs on 127.0.0.1.
#   wrk           single-reading POSTs against nginx `return 204;`, bench/mhd_baseline.c and
#                 meterd (same bench/post_single.lua, same -t/-c), so the ratio is fair;
#   meterd loadgen  everything wrk cannot do: protobuf bodies, gRPC Write calls, fixed rates
#                 without coordinated omission, --verify (every acknowledged reading stored),
#                 --fleet replay.
# BENCH_SECONDS (default 10) scales every step; the whole run takes about 24 x BENCH_SECONDS
# plus queue drains; bench/distributed.sh then adds the distributed mode (api and workers on
# real RabbitMQ / Redis Streams and PostgreSQL, about 10 x BENCH_SECONDS + 30 s; BENCH_DISTRIBUTED=0
# skips it). BUILD selects the build directory (default build), PERF=0 skips perf,
# BENCH_OUT writes somewhere other than docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --bench
BUILD=${BUILD:-build}
make --no-print-directory BUILD="$BUILD" all >/dev/null
BIN=$PWD/$BUILD/meterd
DUR=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-64}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=${BENCH_THREADS:-2}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  nginx -c "$work/nginx.conf" -s stop 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; return 1; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1==m {print $2}'; }
syncs_in() { awk '$1=="meterd_queue_fsync_seconds_count" {print $2}' "$work/$1"; } # saved /metrics → syncs
say() { echo "== $*" >&2; }
load0=$(cut -d' ' -f1-3 /proc/loadavg)

start_meterd() { # port datadir [grpc port: else no gRPC] → pid in $md_pid
  "$BIN" serve --http-addr "127.0.0.1:$1" --grpc-addr "${3:+127.0.0.1:$3}" --data-dir "$2" \
    --log-level warn 2>>"$work/meterd.log" &
  md_pid=$!; pids+=("$md_pid"); wait_port "$1"
}

# Baselines: nginx `return 204;` (1 worker) and libmicrohttpd with a trivial handler.
NGX=$(free_port); MHD=$(free_port); MD=$(free_port); FL=$(free_port); MDG=$(free_port)
cat > "$work/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $work;
  server { listen 127.0.0.1:$NGX; location / { return 204; } } }
NGINX
nginx -c "$work/nginx.conf" & pids+=($!)
cc -O2 -o "$work/mhd_baseline" bench/mhd_baseline.c $(pkg-config --cflags --libs libmicrohttpd)
"$work/mhd_baseline" "$MHD" 2 & pids+=($!)
start_meterd "$MD" "$work/data" "$MDG"; MD_PID=$md_pid
wait_port "$NGX"; wait_port "$MHD"

WRK="wrk -t$THREADS -c$CONNS -d${DUR}s --latency -s bench/post_single.lua"
wrk_run() { # name port → req/s; full output in $work/name.txt
  $WRK "http://127.0.0.1:$2/api/v1/readings" > "$work/$1.txt"
  awk '/Requests\/sec/ {print $2}' "$work/$1.txt"
}
LG="$BIN loadgen --url http://127.0.0.1:$MD --connections $CONNS --threads $THREADS --json --no-progress"
lg() { # name args... → JSON in $work/name.json (a non-zero exit is reported, not fatal)
  local name=$1; shift
  echo "$LG $*" > "$work/$name.cmd"
  $LG "$@" > "$work/$name.json" || echo "loadgen $name exited $?" >&2
}
jget() { /usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[k]
print(d)' "$work/$1.json" "$2"; }

say "single-reading POSTs (wrk): libmicrohttpd, then $ROUNDS alternating rounds of nginx, meterd, meterd --http-fast-lane 0"
# The machines are noisy (the same nginx gave 42k and 70k req/s ten minutes apart): the three
# servers take turns, and the medians and the per-round ratios are reported.
NOFL=$(free_port)
"$BIN" serve --http-addr "127.0.0.1:$NOFL" --grpc-addr "" --data-dir "$work/nofl" \
  --http-fast-lane 0 --log-level warn 2>>"$work/meterd.log" & nofl_pid=$!; pids+=("$nofl_pid")
wait_port "$NOFL"
mhd_rps=$(wrk_run mhd "$MHD")
NGX_LIST=; SINGLE_LIST=; NOFL_LIST=
for r in $(seq "$ROUNDS"); do
  NGX_LIST+="$(wrk_run "nginx$r" "$NGX") "
  SINGLE_LIST+="$(wrk_run "single$r" "$MD") "
  NOFL_LIST+="$(wrk_run "nofl$r" "$NOFL") "
done
kill "$nofl_pid"; wait "$nofl_pid" 2>/dev/null || true
export NGX_LIST SINGLE_LIST NOFL_LIST
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# shellcheck disable=SC2086 # word splitting of the lists is the point
ngx_rps=$(median $NGX_LIST); single_rps=$(median $SINGLE_LIST)
if [ "${PERF:-1}" = 1 ] && command -v perf >/dev/null; then # one more run, not counted
  perf record -g -F 499 -o "$work/perf.data" -p "$MD_PID" -- sleep "$DUR" >/dev/null 2>&1 & perf_pid=$!
  wrk_run perf "$MD" >/dev/null
  wait "$perf_pid" || true
  perf report -i "$work/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -15 > "$work/perf_top.txt" || true
  perf report -i "$work/perf.data" --no-children --sort dso --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -8 > "$work/perf_dso.txt" || true
fi

# wrk cannot verify: the worker's catching up is timed here, like loadgen --verify does below
read -r SINGLE_DEPTH SINGLE_DRAIN SINGLE_STORED < <(/usr/bin/python3 - "$MD" <<'PY'
import sys, time, urllib.request
def m(name):
    for l in urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode().splitlines():
        if l.split(" ")[0] == name: return float(l.split()[1])
t0, depth = time.time(), m("meterd_queue_depth")
while m("meterd_queue_depth") and time.time() - t0 < 600: time.sleep(0.1)
print(int(depth), round(time.time() - t0, 1), int(m("meterd_readings_stored_total")))
PY
)
export SINGLE_DEPTH SINGLE_DRAIN SINGLE_STORED

say "batched ingest (loadgen, durable, --verify): JSON, raw protobuf, gRPC Write"
lg json1k  --format batch --batch 1000  --duration "$DUR" --verify
lg json10k --format batch --batch 10000 --duration "$DUR" --verify
lg raw1k   --format raw   --batch 1000  --duration "$DUR" --verify
lg raw10k  --format raw   --batch 10000 --duration "$DUR" --verify
lg grpc1k  --format grpc  --grpc-addr "127.0.0.1:$MDG" --batch 1000  --duration "$DUR" --verify
lg grpc10k --format grpc  --grpc-addr "127.0.0.1:$MDG" --batch 10000 --duration "$DUR" --verify

say "sustained load at 70% of the max JSON 1k batch rate, worker lag"
b1k_req=$(jget json1k requests_per_s)
lag_rate=$(/usr/bin/python3 -c "print(round(0.7*$b1k_req, 1))")
lg lag --format batch --batch 1000 --rate "$lag_rate" --duration $((2 * DUR)) --verify

say "ack latency at half of the max single-POST rate"
ack_rate=$(/usr/bin/python3 -c "print(round(0.5*$single_rps))")
curl -s "http://127.0.0.1:$MD/metrics" > "$work/ack_metrics0.txt"
lg ack --format single --rate "$ack_rate" --duration "$DUR" --verify
curl -s "http://127.0.0.1:$MD/metrics" > "$work/ack_metrics1.txt"  # the server's side of it
# the floor of that measurement here: same client, rate and connections against the trivial
# libmicrohttpd server (no queue, no fsync, no worker)
echo "$BIN loadgen --url http://127.0.0.1:MHD_BASELINE --connections $CONNS --threads $THREADS --json --no-progress --format single --rate $ack_rate --duration $DUR" > "$work/ackfloor.cmd"
"$BIN" loadgen --url "http://127.0.0.1:$MHD" --connections "$CONNS" --threads "$THREADS" --json \
  --no-progress --format single --rate "$ack_rate" --duration "$DUR" > "$work/ackfloor.json" \
  || echo "loadgen ackfloor exited $?" >&2
# and the disk's: one writer making a small record durable before the next, at the rate the
# queue synced during the ack run, in the same file system (bench/fsync_baseline.c)
sync_rate=$(/usr/bin/python3 -c "print(round(($(syncs_in ack_metrics1.txt) - $(syncs_in ack_metrics0.txt)) / $DUR))")
cc -O2 -o "$work/fsync_baseline" bench/fsync_baseline.c
disk_run() { # name → $work/name.json
  echo "bench/fsync_baseline \$work/fsync.tmp $DUR $sync_rate 200${2:+   # $2}" > "$work/$1.cmd"
  "$work/fsync_baseline" "$work/fsync.tmp" "$DUR" "$sync_rate" 200 > "$work/$1.json" \
    || echo '{"count": 0}' > "$work/$1.json"
}
disk_run ackdisk
# again with both cores kept busy by two spinning processes at nice 19, which the writer
# preempts: on these virtual machines a busy guest CPU slows the disk (decision 36)
spin=(); for _ in 1 2; do nice -n 19 sh -c 'while :; do :; done' & spin+=($!); pids+=($!); done
disk_run ackdiskbusy "beside two 'nice -n 19 sh -c \"while :; do :; done\"'"
kill "${spin[@]}"; wait "${spin[@]}" 2>/dev/null || true

say "bytes on disk per stored reading"
stored=$(metric "$MD" meterd_readings_stored_total)
db_bytes=$(du -cb "$work"/data/meterd.db* | tail -1 | awk '{print $1}')
md_hwm=$(awk '/VmHWM/ {print $2}' /proc/"$MD_PID"/status)

say "fleet replay: 100,000 devices, RSS of a fresh meterd"
start_meterd "$FL" "$work/fleet"; FL_PID=$md_pid
fleet_batches=$(( DUR * 100 ))   # 1,000 readings each: 10 rounds of 100,000 devices at 10 s
LG="$BIN loadgen --url http://127.0.0.1:$FL --connections $CONNS --threads $THREADS --json --no-progress"
lg fleet --fleet 100000 --format batch --batch 1000 --count "$fleet_batches" --verify
fl_hwm=$(awk '/VmHWM/ {print $2}' /proc/"$FL_PID"/status)
fl_rss=$(awk '/VmRSS/ {print $2}' /proc/"$FL_PID"/status)

say "distributed mode: api + workers on RabbitMQ / Redis Streams → PostgreSQL (bench/distributed.sh)"
mkdir -p "$work/dist"
METERD_BIN=$BIN bench/distributed.sh "$work/dist" || echo "| distributed mode (RabbitMQ / Redis" \
  "→ PostgreSQL) | FAILED: bench/distributed.sh exited $? (output above) | |" > "$work/dist/rows.md"
load1=$(cut -d' ' -f1-3 /proc/loadavg)

/usr/bin/python3 - "$work" "$ngx_rps" "$mhd_rps" "$single_rps" "$stored" "$db_bytes" "$md_hwm" \
  "$fl_hwm" "$fl_rss" "$DUR" "$CONNS" "$THREADS" "$load0" "$load1" "$lag_rate" "$ack_rate" <<'PY'
import sys, subprocess, datetime, platform, os, json, re
(work, ngx, mhd, single, stored, dbb, md_hwm, fl_hwm, fl_rss, dur, conns, threads, load0, load1,
 lag_rate, ack_rate) = sys.argv[1:]
ngx, mhd, single = map(float, (ngx, mhd, single))
J = lambda n: json.load(open(f"{work}/{n}.json"))
D = lambda n: open(f"{work}/dist/{n}").read().rstrip() if os.path.exists(f"{work}/dist/{n}") else ""
C = lambda n: re.sub(r"\S*/meterd loadgen", "meterd loadgen", open(f"{work}/{n}.cmd").read().strip())
series = {k: [float(x) for x in os.environ[k].split()] for k in ("NGX_LIST", "SINGLE_LIST", "NOFL_LIST")}
def med(k):  # (median value, the wrk output of the round that gave it)
    v = series[k]; m = sorted(v)[(len(v) - 1) // 2]
    return m, {"NGX_LIST": "nginx", "SINGLE_LIST": "single", "NOFL_LIST": "nofl"}[k] + str(v.index(m) + 1)
(ngx, ngx_f), (single, single_f), (nofl, nofl_f) = med("NGX_LIST"), med("SINGLE_LIST"), med("NOFL_LIST")
def rounds(k):  # per-round req/s and ratio to that round's nginx
    return ", ".join(f"{x:,.0f} ({x / n:.2f}×)" for x, n in zip(series[k], series["NGX_LIST"]))
def wrk_lat(name, q):
    for l in open(f"{work}/{name}.txt"):
        m = re.match(rf"\s+{q}%\s+(\S+)", l)
        if m: return m.group(1)
    return "?"
commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":",1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
def batch_row(label, n):
    d = J(n); v = d.get("verify", {})
    worker = v.get("stored", 0) / max(1e-9, d["elapsed_s"] + v.get("drain_s", 0))
    # what the errors were: statuses other than 2xx / OK, and failures without an answer
    kinds = [f"{k} {v:,}" for k, v in d.get("status", {}).items() if not k.startswith("2") and k != "OK"]
    kinds += [f"{k} {v:,}" for k, v in d.get("failures", {}).items()]
    errs = f"{d['errors']}" + (f" ({', '.join(kinds)})" if d["errors"] and kinds else "")
    return (f"| {label} | {d['readings_per_s']:,.0f} readings/s ({d['requests_per_s']:,.0f} req/s), "
            f"p50 {d['latency_ms']['p50']:.1f} ms, p99 {d['latency_ms']['p99']:.1f} ms, errors {errs} | "
            f"{'OK' if v.get('ok') else 'FAILED'}: {v.get('stored',0):,.0f} stored, queue drained {v.get('drain_s',0):.1f} s "
            f"after the load; worker ≈ {worker:,.0f} readings/s |")
lag, ack, fl, floor, dk, dkb = J("lag"), J("ack"), J("fleet"), J("ackfloor"), J("ackdisk"), J("ackdiskbusy")
def disk(d):
    if not d.get("count"): return "FAILED"
    return (f"{d['per_s']:,.0f} syncs/s: p50 {d['p50_ms']:.2f} ms, p99 {d['p99_ms']:.2f} ms, p99.9 {d['p99_9_ms']:.2f} ms, "
            f"max {d['max_ms']:.1f} ms; {d['over_2ms']:,} of {d['count']:,} over 2 ms, share {d['over2ms_share_pct']:.2f} %")

def hist_delta(name):
    """Cumulative buckets [(le, count)] of histogram name over the ack run (after - before)."""
    def read(f):
        out = {}
        for line in open(f"{work}/{f}"):
            m = re.match(name + r'_bucket\{le="([^"]+)"\} (\S+)$', line.strip())
            if m:
                out[float("inf") if m.group(1) == "+Inf" else float(m.group(1))] = float(m.group(2))
        return out
    a, b = read("ack_metrics0.txt"), read("ack_metrics1.txt")
    return sorted((le, b[le] - a.get(le, 0)) for le in b)

def quantile(buckets, q):
    """histogram_quantile(): linear within the bucket, in ms; '?' without data."""
    if not buckets or buckets[-1][1] <= 0:
        return "?"
    rank, prev_le, prev_n = q * buckets[-1][1], 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return f"> {prev_le * 1000:g} ms"
            return f"{(prev_le + (le - prev_le) * (rank - prev_n) / max(n - prev_n, 1)) * 1000:.2f} ms"
        prev_le, prev_n = le, n
    return "?"

ing, fsy = hist_delta("meterd_http_ingest_seconds"), hist_delta("meterd_queue_fsync_seconds")
server_side = (f"server side over the same run (`meterd_http_ingest_seconds`, headers → 202): p50 "
               f"{quantile(ing, .5)}, p99 {quantile(ing, .99)}; the queue's fdatasync "
               f"(`meterd_queue_fsync_seconds`, {fsy[-1][1] if fsy else 0:,.0f} of them): p50 "
               f"{quantile(fsy, .5)}, p99 {quantile(fsy, .99)} (estimates within histogram buckets)")
perf = open(f"{work}/perf_top.txt").read().rstrip() if os.path.exists(f"{work}/perf_top.txt") else "(perf not run)"
dso = open(f"{work}/perf_dso.txt").read().rstrip() if os.path.exists(f"{work}/perf_dso.txt") else ""
stored_i = int(float(stored or 0))
row = f"""
## {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC — commit {commit}

Machine: {os.cpu_count()} cores ({cpu}), kernel {platform.release()}; load average {load0} before,
{load1} after (other work may share the CPU). Clients (wrk 4.1, `meterd loadgen`) run on the same
machine, `-t{threads} -c{conns}`, keep-alive, 127.0.0.1; BENCH_SECONDS={dur}. Command: `make bench`.

| what | result | notes |
|---|---|---|
| nginx `return 204;` (1 worker), single-reading POST (wrk) | {ngx:,.0f} req/s (median of {len(series['NGX_LIST'])} rounds), p50 {wrk_lat(ngx_f,50)}, p99 {wrk_lat(ngx_f,99)} | baseline; rounds: {", ".join(f"{x:,.0f}" for x in series['NGX_LIST'])} |
| libmicrohttpd trivial 202 (bench/mhd_baseline.c, pool of 2) | {mhd:,.0f} req/s | {mhd/ngx:.2f}× nginx |
| meterd single-reading POST, durable (wrk) | {single:,.0f} req/s (median), p50 {wrk_lat(single_f,50)}, p99 {wrk_lat(single_f,99)} | **{single/ngx:.2f}× nginx** (medians); rounds: {rounds('SINGLE_LIST')}; {int(float(os.environ['SINGLE_STORED'])):,} stored, {int(float(os.environ['SINGLE_DEPTH'])):,} still queued at the end, drained {float(os.environ['SINGLE_DRAIN']):.1f} s later |
| meterd single-reading POST, `--http-fast-lane 0` (wrk) | {nofl:,.0f} req/s (median), p50 {wrk_lat(nofl_f,50)}, p99 {wrk_lat(nofl_f,99)} | {nofl/ngx:.2f}× nginx: every request through libmicrohttpd's suspend/resume (decision 28); rounds: {rounds('NOFL_LIST')} |
{batch_row("meterd JSON batches of 1,000", "json1k")}
{batch_row("meterd JSON batches of 10,000", "json10k")}
{batch_row("meterd raw protobuf batches of 1,000", "raw1k")}
{batch_row("meterd raw protobuf batches of 10,000", "raw10k")}
{batch_row("meterd gRPC Write batches of 1,000", "grpc1k")}
{batch_row("meterd gRPC Write batches of 10,000", "grpc10k")}
| worker lag at {lag_rate} req/s × 1,000 readings (70 % of max) for {2*int(dur)} s | {lag['readings_per_s']:,.0f} readings/s sent, max `meterd_worker_lag_seconds` {lag['verify']['max_worker_lag_s']:.2f} s, max queue depth {lag['verify']['max_queue_depth']:,.0f} | last 202 → all stored (queryable): {lag['verify']['drain_s']:.2f} s; {'OK' if lag['verify']['ok'] else 'FAILED'} |
| ack latency at {ack_rate} single POSTs/s (½ of max) | p50 {ack['latency_ms']['p50']:.2f} ms, p90 {ack['latency_ms']['p90']:.2f} ms, p99 {ack['latency_ms']['p99']:.2f} ms, p99.9 {ack['latency_ms']['p99_9']:.2f} ms | from the scheduled send time, or from the send if the client sent it early (no coordinated omission; decision 36); {ack['requests_per_s']:,.0f} req/s achieved; {server_side} |
| the same load against bench/mhd_baseline.c (floor: client, loopback and scheduling only) | p50 {floor['latency_ms']['p50']:.2f} ms, p90 {floor['latency_ms']['p90']:.2f} ms, p99 {floor['latency_ms']['p99']:.2f} ms, p99.9 {floor['latency_ms']['p99_9']:.2f} ms | no queue, no fsync, no worker: what this machine's 2 cores give the client and a server that answers at once |
| the disk alone: 200-byte `pwrite` + `fdatasync` at the queue's sync rate in that run, one writer (bench/fsync_baseline.c) | {disk(dk)} | floor under every acknowledgement: each 202 waits for at least one such sync, and every request that arrives during a slow one waits for it; share = time more than 2 ms before the end of a sync |
| the same, both cores kept busy by two spinning processes at nice 19 | {disk(dkb)} | the writer preempts them inside this machine, yet the disk slows: the host serves the virtual disk with CPU that a busy guest holds |
| SQLite bytes per stored reading | {int(dbb)/max(1,stored_i):.1f} B ({stored_i:,} readings, {int(dbb):,} B incl. -wal) | after all runs above |
| meterd peak RSS (VmHWM) after all runs above | {int(md_hwm)/1024:,.0f} MiB | |
| fleet replay 100,000 devices, {fl['readings_ok']:,} readings (fresh meterd) | {fl['readings_per_s']:,.0f} readings/s, VmHWM {int(fl_hwm)/1024:,.0f} MiB, VmRSS after {int(fl_rss)/1024:,.0f} MiB | {fl['fleet']['resent_ok']:,} resent, {fl['fleet']['late_ok']:,} late; verify {'OK' if fl['verify']['ok'] else 'FAILED'} |
{D("rows.md")}

Commands (`$work` is a temporary directory, ports are free ports):

```
wrk -t{threads} -c{conns} -d{dur}s --latency -s bench/post_single.lua http://127.0.0.1:PORT/api/v1/readings   # nginx, mhd_baseline, meterd
""" + "\n".join(C(n) for n in ("json1k", "json10k", "raw1k", "raw10k", "grpc1k", "grpc10k", "lag", "ack", "ackfloor", "ackdisk", "ackdiskbusy", "fleet")) + f"""
{D("commands.txt")}
```

Top of `perf record -g` on meterd during the single-POST run (self time by symbol, then by object):

```
{perf}

{dso}
```
"""
path = os.environ.get("BENCH_OUT", "docs/benchmarks.md")
head = "# Benchmarks\n\nEach section is one `make bench` run (bench/run.sh); newest last. Numbers from other runs are not comparable unless the machine matches.\n"
text = open(path).read() if os.path.exists(path) else head
open(path, "w").write(text + row)
print(row)
PY
