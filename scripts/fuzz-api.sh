#!/usr/bin/env bash
# Fuzzes the HTTP API of the real server (embedded mode) with schemathesis against its own
# OpenAPI document, /api/v1/openapi.json: no answer may be a server error, and every answer
# must match the document (status code, content type, body schema). Installs schemathesis
# with pip when it is missing. Part of the test command (scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
st() {
  python3 -c 'import sys; from schemathesis.cli import schemathesis; sys.argv[0] = "st"; sys.exit(schemathesis())' "$@"
}
if ! python3 -c 'import schemathesis' 2>/dev/null; then
  echo "fuzz-api: installing schemathesis (pip)" >&2
  python3 -m pip install -q schemathesis
fi
cargo build -q -p seckill-server --locked
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
grpc=$(free_port)
dir=$(mktemp -d)
bin=$PWD/target/debug/seckill-server
# An empty working directory and no SECKILL_* from outside: the built-in defaults, embedded,
# with the global rate limit off so the fuzzer's requests reach the handlers.
(cd "$dir" && exec env $(env | grep -o '^SECKILL_[^=]*' | sed 's/^/-u /') \
  SECKILL_SERVER__HOST=127.0.0.1 SECKILL_SERVER__PORT="$port" SECKILL_SERVER__GRPC_PORT="$grpc" \
  SECKILL_SECKILL__RATE_LIMIT__ENABLE=false SECKILL_TELEMETRY__LOG_LEVEL=warn "$bin") \
  >"$dir/server.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
base=http://127.0.0.1:$port
for _ in $(seq 100); do
  curl -fs -o /dev/null "$base/health" && break
  sleep 0.1
done
curl -fs -o /dev/null "$base/health" || { cat "$dir/server.log" >&2; exit 1; }
# Products on sale, so purchases, stats and tokens reach past "unknown product".
now=$(date -u +%s)
for p in 1 2 3; do
  curl -fs -o /dev/null -H 'content-type: application/json' "$base/api/v1/seckill/activity/prewarm" \
    -d "{\"product_id\":$p,\"product_name\":\"fuzz\",\"price\":1.5,\"stock\":1000000,\"start_time\":\"$(date -u -d @$((now - 60)) +%FT%TZ)\",\"end_time\":\"$(date -u -d @$((now + 3600)) +%FT%TZ)\",\"per_user_limit\":3}"
done
# The degradation lever is left out: turned on, every purchase answers 503 by design.
st run "$base/api/v1/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing --max-examples "${FUZZ_EXAMPLES:-50}" \
  --exclude-path /api/v1/system/degradation \
  --generation-database none --no-color --report-dir "$dir/report"
if grep -q "panicked" "$dir/server.log"; then
  echo "fuzz-api: the server panicked:" >&2
  cat "$dir/server.log" >&2
  exit 1
fi
