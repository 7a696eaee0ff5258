#!/usr/bin/env bash
# One distributed worker's apply rate, for profiling and before/after comparisons (the numbers
# in docs/decisions.md 21). Uses servers started with `bench/dist_servers.py start SRVDIR`.
#   bench/worker_rate.sh SRVDIR amqp|redis BATCHES
# Creates a fresh database, starts `meterd api`, pre-fills the queue with BATCHES raw batches
# of 1,000 readings, stops the api (NOAPI=0 keeps it running: a live-event subscriber), starts
# one `meterd worker` and prints the time until meterd_readings_stored_total reaches the
# pre-filled count. PGSET="name=value" sets a PostgreSQL parameter on the database (e.g.
# log_min_duration_statement=0 for a statement log); WPFX="VAR=value" adds to the worker's env.
set -euo pipefail
[ $# = 3 ] || { sed -n '2,10p' "$0"; exit 2; }
srv=$1 be=$2 n=$3
cd "$(dirname "$0")/.."
BIN=${METERD_BIN:-$PWD/build/meterd}
SRV="/usr/bin/python3 bench/dist_servers.py"
# shellcheck disable=SC1091
. "$srv/servers.env"
tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
db=wr_${be}_$$_$RANDOM
DB=$($SRV db "$srv" "$db")
[ -n "${PGSET:-}" ] && psql "$DB" -qc "ALTER DATABASE $db SET $PGSET"
if [ "$be" = amqp ]; then
  E="METERD_QUEUE=amqp RABBITMQ_URL=$RABBITMQ_URL RABBITMQ_INGEST_QUEUE=wr.q DATABASE_URL=$DB"
  $SRV purge "$srv" amqp wr.q >/dev/null
else
  E="METERD_QUEUE=redis REDIS_HOST=$REDIS_HOST REDIS_PORT=$REDIS_PORT REDIS_STREAM=wr_s DATABASE_URL=$DB"
  $SRV purge "$srv" redis wr_s >/dev/null
fi
port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
ready() { for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$1/ready" && return 0; sleep 0.1; done; return 1; }
ap=$(port) wp=$(port)
# shellcheck disable=SC2086
env $E "$BIN" api --http-addr "127.0.0.1:$ap" --grpc-addr '' --data-dir "$tmp/api" --log-level warn 2>"$tmp/api.log" &
api=$!; pids+=("$api")
ready "$ap"
"$BIN" loadgen --url "http://127.0.0.1:$ap" --format raw --batch 1000 --count "$n" --connections 16 \
  --threads 2 --json --no-progress > "$tmp/prefill.json"
if [ "${NOAPI:-1}" = 1 ]; then kill "$api"; wait "$api" 2>/dev/null || true; fi
t0=$(date +%s.%N)
# shellcheck disable=SC2086
env $E CONSUMER_NAME=w1 ${WPFX:-} "$BIN" worker --http-addr "127.0.0.1:$wp" --data-dir "$tmp/w1" \
  --drain-timeout 0 --log-level warn 2>"$tmp/w1.log" &
pids+=("$!")
ready "$wp"
total=$((n * 1000))
while :; do
  s=$(curl -s "http://127.0.0.1:$wp/metrics" | awk '/^meterd_readings_stored_total/{print $2}')
  [ "${s:-0}" -ge "$total" ] && break
  sleep 0.2
done
t1=$(date +%s.%N)
/usr/bin/python3 -c "print('%s: %d readings stored in %.2f s: %.0f readings/s' % ('$be', $total, $t1 - $t0, $total / ($t1 - $t0)))"
curl -s "http://127.0.0.1:$wp/metrics" | grep -E '^meterd_store_apply_seconds_(sum|count)' || true
