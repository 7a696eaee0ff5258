#!/usr/bin/env bash
# Distributed mode for make bench (called by bench/run.sh; runs alone too): readings/s per
# worker through RabbitMQ → PostgreSQL and Redis Streams → PostgreSQL, and the api's ack rate.
# Real servers from the Debian packages (postgres 15, rabbitmq-server, redis-server) run on free
# loopback ports in a temporary directory (bench/dist_servers.py, which reuses the test harness
# tests/integration/servers.py). Per backend:
#   1. `meterd api` alone (no worker): `meterd loadgen` raw protobuf and JSON batches of 1,000
#      for BENCH_SECONDS each → readings/s acknowledged (the queue only fills up); then purged;
#   2. the queue is pre-filled with BENCH_DIST_PREFILL readings (raw batches of 1,000) and the
#      api is stopped; then, each window BENCH_SECONDS after a 1 s warm-up, with the readings
#      stored counted by the workers' own meterd_readings_stored_total:
#        a. 1 worker, no api running (nobody subscribed to the live events),
#        b. 1 worker with the api running again (subscribed: the normal deployment),
#        c. 2 workers with the api running;
#        d. RabbitMQ only: 1 worker with RABBITMQ_READING_EVENTS=0, the api running;
#      a window ends early when the queue is empty (the rate is then over the time to drain).
#   CPU of every process during each window comes from /proc (% of one core).
# Usage: bench/distributed.sh [OUTDIR]. Writes OUTDIR/rows.md (rows for the results table of
# run.sh) and OUTDIR/commands.txt; without OUTDIR prints them. BENCH_DISTRIBUTED=0 skips it;
# missing server binaries skip it with a note. METERD_BIN selects the binary (default
# build/meterd); BENCH_DIST_BACKENDS="amqp" (or "redis") runs one backend. About 11 ×
# BENCH_SECONDS + 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${METERD_BIN:-$PWD/build/meterd}
DUR=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
PREFILL=${BENCH_DIST_PREFILL:-$((1000000 * DUR))}  # enough for the windows at ~300k/s
out=${1:-}
print=0
if [ -z "$out" ]; then out=$(mktemp -d); print=1; fi
mkdir -p "$out"
rows=$out/rows.md cmds=$out/commands.txt
: > "$rows"; : > "$cmds"
say() { echo "== distributed: $*" >&2; }
skip() { # reason
  say "skipped: $1"
  echo "| distributed mode (RabbitMQ / Redis → PostgreSQL) | skipped | $1 |" > "$rows"
  if [ "$print" = 1 ]; then cat "$rows"; rm -rf "$out"; fi
  exit 0
}
[ "${BENCH_DISTRIBUTED:-1}" = 0 ] && skip "BENCH_DISTRIBUTED=0"
for b in /usr/lib/postgresql/15/bin/postgres /usr/lib/rabbitmq/bin/rabbitmq-server /usr/bin/redis-server; do
  [ -x "$b" ] || skip "$b not installed (postgresql-15, rabbitmq-server, redis-server)"
done
/usr/bin/python3 -c 'import pika, redis, psycopg2' 2>/dev/null ||
  skip "python3-pika, python3-redis or python3-psycopg2 missing"
[ "$(id -u)" = 0 ] || skip "needs root (the servers run as the postgres and rabbitmq users)"

tmp=$(mktemp -d)
chmod 755 "$tmp"
pids=()
SRV="/usr/bin/python3 bench/dist_servers.py"
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  $SRV stop "$tmp/srv" || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
ready() { for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$1/ready" && return 0; sleep 0.1; done
          echo "meterd on port $1 not ready; logs:" >&2; tail -5 "$tmp"/*.log >&2; return 1; }
# The command lines as the docs show them: meterd for the binary, $work for the directory.
rec() { echo "$*" | sed -e "s#$BIN#meterd#g" -e "s#$tmp#\$work#g" >> "$cmds"; }

say "starting PostgreSQL, RabbitMQ and Redis"
rec "$SRV start $tmp/srv   # PostgreSQL 15 (fsync=on), RabbitMQ, Redis (appendonly, appendfsync always) on free loopback ports"
$SRV start "$tmp/srv"
rec "# per backend: api, the two loadgen runs against it alone; queue purged ($SRV purge); pre-fill; api stopped;" \
  "worker 1 (window), api started again (window), worker 2 (window); each window $DUR s after 1 s of warm-up," \
  "readings/s from the workers' meterd_readings_stored_total and CPU from /proc ($SRV measure)"
# shellcheck disable=SC1091
. "$tmp/srv/servers.env"
AQ=bench.ingest.queue
STREAM=bench_readings

backend_env() { # amqp|redis → environment of the api and the workers
  if [ "$1" = amqp ]; then
    echo "METERD_QUEUE=amqp RABBITMQ_URL=$RABBITMQ_URL RABBITMQ_INGEST_QUEUE=$AQ DATABASE_URL=$DB"
  else
    echo "METERD_QUEUE=redis REDIS_HOST=$REDIS_HOST REDIS_PORT=$REDIS_PORT REDIS_STREAM=$STREAM DATABASE_URL=$DB"
  fi
}
start_api() { # backend → $api_pid
  local cmd="env $(backend_env "$1") $BIN api --http-addr 127.0.0.1:$AP --grpc-addr '' --data-dir $tmp/$1-api --log-level warn"
  [ "$api_recorded" = "$1" ] || rec "$cmd"
  env $(backend_env "$1") "$BIN" api --http-addr "127.0.0.1:$AP" --grpc-addr "" \
    --data-dir "$tmp/$1-api" --log-level warn 2>>"$tmp/$1-api.log" &
  api_pid=$!; pids+=("$api_pid"); api_recorded=$1
  ready "$AP"
}
start_worker() { # backend index port [VAR=value...] → appends to $wpids
  local be=$1 i=$2 port=$3; shift 3
  local cmd="env $(backend_env "$be") CONSUMER_NAME=w$i $* $BIN worker --http-addr 127.0.0.1:$port --data-dir $tmp/$be-w$i --drain-timeout 0 --log-level warn"
  if [ $# -gt 0 ]; then rec "$cmd"; elif [ "$i" = 1 ]; then rec "$cmd   # ×2 for 2 workers"; fi
  set -- "$be" "$i" "$port" "$@"
  env $(backend_env "$1") CONSUMER_NAME="w$2" "${@:4}" "$BIN" worker --http-addr "127.0.0.1:$3" \
    --data-dir "$tmp/$1-w$2" --drain-timeout 0 --log-level warn 2>>"$tmp/$1-w$2.log" &
  wpids+=("$!"); pids+=("$!")
  ready "$3"
}
LGO="--connections $CONNS --threads $THREADS --json --no-progress"
ack_run() { # backend name format → $tmp/<backend>_<name>.json, with the CPU during the run
  local f=$tmp/$1_$2.json
  [ "$1" = amqp ] && rec "$BIN loadgen --url http://127.0.0.1:$AP --format $3 --batch 1000 --duration $DUR $LGO   # against the api alone"
  "$BIN" loadgen --url "http://127.0.0.1:$AP" --format "$3" --batch 1000 --duration "$DUR" $LGO \
    > "$f" & local lg=$!; pids+=("$lg")
  $SRV measure "$tmp/srv" "$tmp/$1_$2_cpu.json" --seconds "$(/usr/bin/python3 -c "print($DUR * 0.9)")" \
    --pid "api=$api_pid" --pid "loadgen=$lg"
  wait "$lg" || echo "loadgen $1 $2 exited $?" >&2
}
window() { # backend name → $tmp/<backend>_<name>.json: readings the running workers store
  local args=() u
  sleep 1  # warm-up: connections, the first group, partitions
  for u in "${wports[@]}"; do args+=(--worker "http://127.0.0.1:$u"); done
  $SRV measure "$tmp/srv" "$tmp/$1_$2.json" --seconds "$DUR" "${args[@]}" \
    --pid "$([ ${#wpids[@]} = 1 ] && echo worker || echo workers)=$(IFS=,; echo "${wpids[*]}")" \
    ${api_pid:+--pid "api=$api_pid"}
}
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

AP=$(free_port)
api_pid='' api_recorded=''
for be in ${BENCH_DIST_BACKENDS:-amqp redis}; do
  [ "$be" = amqp ] && name="RabbitMQ" || name="Redis"
  DB=$($SRV db "$tmp/srv" "bench_$be")
  say "$name: api ack rate (no worker), raw and JSON batches of 1,000, ${DUR} s each"
  start_api "$be"
  ack_run "$be" raw raw
  ack_run "$be" json batch
  if [ "$be" = amqp ]; then $SRV purge "$tmp/srv" amqp "$AQ"; else $SRV purge "$tmp/srv" redis "$STREAM"; fi
  say "$name: pre-filling the queue with $PREFILL readings"
  [ "$be" = amqp ] && rec "$BIN loadgen --url http://127.0.0.1:$AP --format raw --batch 1000 --count $((PREFILL / 1000)) $LGO   # pre-fill, after purging the queue"
  "$BIN" loadgen --url "http://127.0.0.1:$AP" --format raw --batch 1000 --count $((PREFILL / 1000)) \
    $LGO > "$tmp/${be}_prefill.json" || echo "loadgen prefill exited $?" >&2
  stop_pid "$api_pid"; api_pid=
  wpids=(); wports=()
  say "$name → PostgreSQL: 1 worker without the api, 1 worker, 2 workers; ${DUR} s each"
  wports+=("$(free_port)"); start_worker "$be" 1 "${wports[0]}"
  window "$be" w1_noapi
  start_api "$be"
  window "$be" w1
  wports+=("$(free_port)"); start_worker "$be" 2 "${wports[1]}"
  window "$be" w2
  if [ "$be" = amqp ]; then  # the same worker without the per-reading messages (decisions 27)
    for p in "${wpids[@]}"; do stop_pid "$p"; done
    wpids=(); wports=("$(free_port)")
    start_worker "$be" 1 "${wports[0]}" RABBITMQ_READING_EVENTS=0
    window "$be" w1_quiet
  fi
  for p in "$api_pid" "${wpids[@]}"; do stop_pid "$p"; done
  api_pid=
  # what the workers left: not to weigh on the next backend
  if [ "$be" = amqp ]; then $SRV purge "$tmp/srv" amqp "$AQ"; else $SRV purge "$tmp/srv" redis "$STREAM"; fi
  grep -hE '"level": ?"error"' "$tmp/$be"-*.log >&2 || true  # errors of the api and workers, if any
done

/usr/bin/python3 - "$tmp" "$rows" "$PREFILL" "${BENCH_DIST_BACKENDS:-amqp redis}" <<'PY'
import json, os, sys
tmp, rows, prefill, backends = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split()
def J(n):
    try:
        return json.load(open(os.path.join(tmp, n + ".json")))
    except (OSError, ValueError):
        return None
def cpu(d, order):
    c = d.get("cpu_pct", {})
    return ", ".join(f"{k} {c[k]:.0f} %" for k in order if k in c)
def limit(d, order, waits):
    """What bounded the window, from /proc: CPU of the machine, then of each process."""
    c, cores, busy = d.get("cpu_pct", {}), d.get("cores", 1), d.get("machine_busy_pct", 0)
    others = max(0.0, busy - sum(c.values()))
    text = f"CPU: {cpu(d, order)}, other processes {others:.0f} % (machine {busy:.0f} % of {100 * cores} %)"
    full = [k for k in order if c.get(k, 0) >= 85]
    if busy >= 90 * cores:
        return text + " → bound by CPU (all cores busy)"
    if full:
        return text + f" → {', '.join(full)} near a full core"
    return text + f" → no core saturated: bound by {waits}"
out = []
for be, name in (("amqp", "RabbitMQ"), ("redis", "Redis Streams")):
    if be not in backends:
        continue
    broker = "RabbitMQ" if be == "amqp" else "Redis"
    confirm = "publisher confirms" if be == "amqp" else "XADD replies (appendfsync always)"
    for n, what in (("raw", "raw protobuf"), ("json", "JSON")):
        d, c = J(f"{be}_{n}"), J(f"{be}_{n}_cpu") or {}
        if not d:
            out.append(f"| `meterd api` on {name}, {what} batches of 1,000 | FAILED (no loadgen result) | |")
            continue
        out.append(f"| `meterd api` on {name}, {what} batches of 1,000, no worker | {d['readings_per_s']:,.0f} readings/s acked "
                   f"({d['requests_per_s']:,.0f} req/s), p50 {d['latency_ms']['p50']:.1f} ms, p99 {d['latency_ms']['p99']:.1f} ms, "
                   f"errors {d['errors']} | {limit(c, ('api', broker, 'loadgen'), 'waiting for the ' + confirm)} |")
    pf = J(f"{be}_prefill")
    filled = pf["readings_ok"] if pf else prefill
    windows = [("w1_noapi", "1 worker, no `meterd api` running (no live-event subscriber)"),
               ("w1", "1 worker, `meterd api` running"), ("w2", "2 workers, `meterd api` running")]
    if be == "amqp":
        windows.append(("w1_quiet", "1 worker with `RABBITMQ_READING_EVENTS=0`, `meterd api` running"))
    for n, what in windows:
        d = J(f"{be}_{n}")
        if not d or "readings_per_s" not in d:
            out.append(f"| {name} → PostgreSQL, {what} | FAILED (no measurement) | |")
            continue
        if not d["stored"]:
            out.append(f"| {name} → PostgreSQL, {what} | not measured | the queue was empty before this "
                       f"window (pre-filled with {filled:,} readings): raise BENCH_DIST_PREFILL |")
            continue
        res = f"**{d['readings_per_s']:,.0f} readings/s applied**"
        if d["workers"] > 1:
            res += f" ({d['readings_per_s'] / d['workers']:,.0f} per worker)"
        if n == "w1" and (q := J(f"{be}_w1_noapi")) and q.get("readings_per_s"):
            res += f", {100 * (d['readings_per_s'] / q['readings_per_s'] - 1):+.0f} % vs no subscriber"
        if n == "w1_quiet" and (q := J(f"{be}_w1")) and q.get("readings_per_s"):
            res += f", {100 * (d['readings_per_s'] / q['readings_per_s'] - 1):+.0f} % vs one message per reading"
        end = (f"queue drained after {d['elapsed_s']:.1f} s" if d["drained"]
               else f"{d['elapsed_s']:.0f} s window")
        waits = ("round trips: each worker applies one group at a time "
                 "(consume → PostgreSQL transaction → live events → ack)")
        out.append(f"| {name} → PostgreSQL, {what} | {res} | {d['stored']:,.0f} stored in the {end}, queue pre-filled "
                   f"with {filled:,} readings; {d['transactions']:,.0f} transactions of {d['readings_per_txn']:,.0f} readings, "
                   f"{d['txn_ms']:.0f} ms each (incl. live events); "
                   f"{limit(d, ('worker', 'workers', 'PostgreSQL', broker, 'api'), waits)} |")
open(rows, "w").write("\n".join(out) + "\n")
PY
if [ "$print" = 1 ]; then cat "$rows"; echo; echo "Commands:"; cat "$cmds"; rm -rf "$out"; fi
