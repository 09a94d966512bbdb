# Shared by the benchmark scripts: removes everything a benchmark server made under NAME —
# Redis keys, the PostgreSQL schema, RabbitMQ queues and exchanges, Kafka topics.
# Usage: . benches/stack.sh; stack_cleanup NAME
stack_cleanup() {
  local name=$1 tansu
  redis-cli --scan --pattern "$name:*" | xargs -r redis-cli unlink >/dev/null 2>&1 || true
  psql -h 127.0.0.1 -U postgres -d postgres -qAt -c "DROP SCHEMA IF EXISTS $name CASCADE" >/dev/null 2>&1 || true
  if command -v rabbitmqctl >/dev/null 2>&1; then
    rabbitmqctl -q list_queues name 2>/dev/null | grep "^$name\." | xargs -r -n1 rabbitmqctl -q delete_queue >/dev/null 2>&1 || true
    for x in "$name" "$name.dlx"; do
      rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$x\">>), false, <<\"bench\">>)." >/dev/null 2>&1 || true
    done
  fi
  tansu=$(tansu_bin 2>/dev/null || true)
  if [ -n "$tansu" ] && [ -x "$tansu" ]; then
    "$tansu" topic list --broker tcp://127.0.0.1:9092 2>/dev/null \
      | python3 -c 'import json,sys;print("\n".join(t["name"] for t in json.load(sys.stdin)))' 2>/dev/null \
      | grep "^$name\." | xargs -r -n1 "$tansu" topic delete --broker tcp://127.0.0.1:9092 >/dev/null 2>&1 || true
  fi
}
