#!/usr/bin/env bash
# Order pipeline benchmark on the production stack, in one run:
#   1. messages/s published with confirms, one by one and in batches, per broker
#      (crates/mq/examples/publish_throughput.rs);
#   2. for RabbitMQ and Kafka: seckill-server on Redis + the broker + PostgreSQL sells at a paced
#      RATE purchases/s for SECONDS; once the pipeline has drained, PostgreSQL gives the lag from
#      the sale (the purchase script's Redis time, just before the 200) to the order row
#      (created_at) at p50/p99/max, and the purchases/s and order rows are checked equal.
# Usage: bash benches/pipeline.sh [RATE] [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-2000}
SECS=${2:-10}
ROUNDS=${3:-3}
PORT=18283
. scripts/services.sh
ensure_redis; ensure_rabbitmq; ensure_postgres; ensure_kafka

cargo build --release -q -p seckill-server -p seckill-bench
cargo run --release -q -p seckill-mq --features rabbitmq,kafka --example publish_throughput -- "$ROUNDS" 5000
BIN=target/release
PSQL=(psql -h 127.0.0.1 -U postgres -d postgres -qAt)

. benches/stack.sh
cleanup() {
  [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  [ -z "${NAME:-}" ] || stack_cleanup "$NAME"
}
trap cleanup EXIT

printf '\npipeline at %s purchases/s for %ss (Redis inventory, PostgreSQL orders):\n' "$RATE" "$SECS"
printf '%-10s %12s %10s %10s %10s %10s\n' broker purchases/s orders lag_p50_ms lag_p99_ms lag_max_ms
for MQ in rabbitmq kafka; do
  NAME=bench_pipe_${MQ}_$$
  SECKILL_SERVER__PORT=$PORT SECKILL_SERVER__HOST=127.0.0.1 SECKILL_SERVER__SHUTDOWN_TIMEOUT=60s \
    SECKILL_INVENTORY__BACKEND=redis SECKILL_REDIS__HOST=127.0.0.1 SECKILL_REDIS__ALLOW_VOLATILE=true SECKILL_REDIS__KEY_PREFIX=$NAME \
    SECKILL_MQ__BACKEND=$MQ SECKILL_MQ__RABBITMQ__PREFIX=$NAME SECKILL_MQ__KAFKA__TOPIC_PREFIX=$NAME. \
    SECKILL_ORDERS__STORE=postgres SECKILL_ORDERS__SCHEMA=$NAME \
    SECKILL_SECKILL__RATE_LIMIT__REQUESTS_PER_SECOND=100000000 SECKILL_SECKILL__RATE_LIMIT__BURST_SIZE=100000000 \
    RUST_LOG=warn "$BIN/seckill-server" >"/tmp/seckill-pipeline-$MQ.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/health" && break; sleep 0.1; done
  curl -sf -X POST "http://127.0.0.1:$PORT/api/v1/seckill/activity/prewarm" -H 'Content-Type: application/json' \
    -d "{\"product_id\":7001,\"product_name\":\"bench\",\"price\":1,\"stock\":$((RATE * SECS * 2)),\"start_time\":\"2024-01-01T00:00:00Z\",\"end_time\":\"2099-01-01T00:00:00Z\"}" >/dev/null
  LOAD=$("$BIN/seckill-bench" load --url "http://127.0.0.1:$PORT/api/v1/seckill/purchase" \
    --body '{"product_id":7001,"user_id":{user},"quantity":1}' --connections 32 --seconds "$SECS" --rate "$RATE")
  SOLD=$(python3 -c 'import json,sys;print(json.loads(sys.argv[1])["statuses"].get("200",0))' "$LOAD")
  RPS=$(python3 -c 'import json,sys;d=json.loads(sys.argv[1]);print(round(d["statuses"].get("200",0)/d["seconds"]))' "$LOAD")
  for _ in $(seq 1200); do
    ST=$(curl -sf "http://127.0.0.1:$PORT/api/v1/seckill/stats/7001")
    python3 -c 'import json,sys;d=json.loads(sys.argv[1])["data"];sys.exit(0 if d["in_transit"]==0 and d["outbox_pending"]==0 else 1)' "$ST" && break
    sleep 0.1
  done
  read -r ROWS P50 P99 MAX < <("${PSQL[@]}" -F ' ' -c \
    "SELECT count(*), percentile_disc(0.5) WITHIN GROUP (ORDER BY created_at_ms - sold_at_ms),
            percentile_disc(0.99) WITHIN GROUP (ORDER BY created_at_ms - sold_at_ms), max(created_at_ms - sold_at_ms)
     FROM $NAME.orders WHERE product_id = 7001")
  printf '%-10s %12s %10s %10s %10s %10s\n' "$MQ" "$RPS" "$ROWS" "$P50" "$P99" "$MAX"
  [ "$ROWS" = "$SOLD" ] || echo "  (!) $SOLD purchases succeeded but $ROWS order rows exist" >&2
  cleanup
  SERVER_PID=
done
