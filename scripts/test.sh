#!/usr/bin/env bash
# The test command: starts what the tests need, then runs every test of the workspace
# (unit, integration, contract suites against the real services, and doc tests), then fuzzes
# the HTTP API against its OpenAPI document (scripts/fuzz-api.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
. scripts/services.sh
ensure_redis
ensure_rabbitmq
ensure_postgres
ensure_kafka
cargo test --workspace --all-features --locked "$@"
bash scripts/fuzz-api.sh
