#!/usr/bin/env bash
# End-to-end HTTP benchmark, measured in one run against a baseline on the same machine:
#   bare   — seckill-bench bare: axum answering a fixed JSON body (this machine's HTTP ceiling)
#   soldout — seckill-server (embedded, every protection on: degradation, global token bucket,
#             request queue, circuit breaker) answering purchases of a sold-out product
#   sale   — seckill-server selling: fresh user ids on a product with ample stock
# Runs are interleaved ROUNDS times; the medians and their ratios are printed.
# Usage: [BACKEND=memory|redis] [MQ=memory|rabbitmq|kafka] [ORDERS=memory|postgres] \
#        bash benches/run.sh [ROUNDS] [SECONDS] [CONNECTIONS]
# With BACKEND=redis the server keeps its stock in Redis at 127.0.0.1:6379; MQ and ORDERS put the
# order pipeline on a real broker and PostgreSQL (everything under the name bench_http, removed
# afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-5}
CONNS=${3:-64}
SERVER_PORT=18183
BARE_PORT=18190

cargo build --release -q -p seckill-server -p seckill-bench
BIN=target/release

BACKEND=${BACKEND:-memory} MQ=${MQ:-memory} ORDERS=${ORDERS:-memory}
. scripts/services.sh
. benches/stack.sh
cleanup() {
  kill "${SERVER_PID:-}" "${BARE_PID:-}" 2>/dev/null || true
  wait "${SERVER_PID:-}" 2>/dev/null || true
  stack_cleanup bench_http
}
trap cleanup EXIT
[ "$BACKEND" = redis ] && ensure_redis
[ "$MQ" = rabbitmq ] && ensure_rabbitmq
[ "$MQ" = kafka ] && ensure_kafka
[ "$ORDERS" = postgres ] && ensure_postgres
stack_cleanup bench_http
SECKILL_MQ__BACKEND=$MQ SECKILL_MQ__RABBITMQ__PREFIX=bench_http SECKILL_MQ__KAFKA__TOPIC_PREFIX=bench_http. \
  SECKILL_ORDERS__STORE=$ORDERS SECKILL_ORDERS__SCHEMA=bench_http SECKILL_SERVER__SHUTDOWN_TIMEOUT=60s \
  SECKILL_INVENTORY__BACKEND=$BACKEND SECKILL_REDIS__KEY_PREFIX=bench_http SECKILL_REDIS__HOST=127.0.0.1 SECKILL_REDIS__ALLOW_VOLATILE=true \
  SECKILL_SERVER__PORT=$SERVER_PORT SECKILL_SERVER__HOST=127.0.0.1 \
  SECKILL_SECKILL__RATE_LIMIT__REQUESTS_PER_SECOND=100000000 \
  SECKILL_SECKILL__RATE_LIMIT__BURST_SIZE=100000000 \
  SECKILL_SECKILL__MAX_CONCURRENT_REQUESTS=10000 \
  RUST_LOG=warn "$BIN/seckill-server" >/tmp/seckill-bench-server.log 2>&1 &
SERVER_PID=$!
"$BIN/seckill-bench" bare --port $BARE_PORT >/dev/null 2>&1 &
BARE_PID=$!
ready() { curl -s -o /dev/null "http://127.0.0.1:$SERVER_PORT/health" && curl -s -o /dev/null "http://127.0.0.1:$BARE_PORT/health"; }
for _ in $(seq 100); do ready && break; sleep 0.1; done
ready || { echo "servers did not start; see /tmp/seckill-bench-server.log" >&2; exit 1; }

prewarm() {
  curl -sf -X POST "http://127.0.0.1:$SERVER_PORT/api/v1/seckill/activity/prewarm" \
    -H 'Content-Type: application/json' \
    -d "{\"product_id\":$1,\"product_name\":\"bench\",\"price\":1,\"stock\":$2,\"start_time\":\"2024-01-01T00:00:00Z\",\"end_time\":\"2099-01-01T00:00:00Z\"}" >/dev/null
}
prewarm 1 100          # sold out after the warm-up
prewarm 2 1000000000   # never sells out

load() { # URL BODY USER_START
  "$BIN/seckill-bench" load --url "$1" --body "$2" --connections "$CONNS" --seconds "$SECS" --user-start "${3:-1}"
}
rps() { sed -E 's/.*"rps":([0-9.]+).*/\1/'; }

SOLD='{"product_id":1,"user_id":{user},"quantity":1}'
SALE='{"product_id":2,"user_id":{user},"quantity":1}'
load "http://127.0.0.1:$SERVER_PORT/api/v1/seckill/purchase" "$SOLD" >/dev/null   # warm-up; sells the 100

bare=() soldout=() sale=()
for r in $(seq "$ROUNDS"); do
  bare+=("$(load "http://127.0.0.1:$BARE_PORT/api/v1/seckill/purchase" "$SOLD" | rps)")
  soldout+=("$(load "http://127.0.0.1:$SERVER_PORT/api/v1/seckill/purchase" "$SOLD" | rps)")
  out=$(load "http://127.0.0.1:$SERVER_PORT/api/v1/seckill/purchase" "$SALE" $((r * 100000000)))
  sale+=("$(echo "$out" | rps)")
  echo "round $r: bare ${bare[-1]}  soldout ${soldout[-1]}  sale ${sale[-1]} ($(echo "$out" | grep -o '"statuses":{[^}]*}'))" >&2
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mb=$(median "${bare[@]}"); ms=$(median "${soldout[@]}"); mp=$(median "${sale[@]}")
echo "median requests/s over $ROUNDS rounds of ${SECS}s, $CONNS connections, inventory $BACKEND, broker $MQ, orders $ORDERS:"
echo "  bare HTTP baseline     $mb"
echo "  seckill, sold out      $ms   ratio $(awk "BEGIN{printf \"%.2f\", $ms/$mb}")"
echo "  seckill, selling       $mp   ratio $(awk "BEGIN{printf \"%.2f\", $mp/$mb}")"
