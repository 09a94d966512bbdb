#!/usr/bin/env bash
# Starts the external services the tests and the production mode use, when they are not
# running already. Idempotent: a service that answers is left alone. Source it and call the
# ensure_* functions, or run it with service names: scripts/services.sh redis rabbitmq postgres kafka
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    log "cannot install $* (no apt-get): install it and retry"; return 1
  fi
  if [ -z "${SECKILL_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    export SECKILL_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# wait_for NAME SECONDS COMMAND...: retries COMMAND until it succeeds.
wait_for() {
  local name=$1 secs=$2; shift 2
  local i
  for ((i = 0; i < secs * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  log "$name did not become ready within ${secs}s"; return 1
}

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then return 0; fi
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server redis-tools
  log "starting redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_for redis 10 sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
}
