#!/usr/bin/env bash
# Makes sure the services that tests, benchmarks and `make run` need are
# installed and running: PostgreSQL (started if stopped) and ClickHouse
# (installed from Debian's packages if missing, started as a daemon with its
# own data folder). Safe to run again; prints what it does.
#
# Environment: LLMTAP_CH_DIR (ClickHouse data folder, default /tmp/llmtap-clickhouse),
# SKIP_CLICKHOUSE=1 to leave ClickHouse alone, SKIP_NODE=1 to skip the npm install, SKIP_PROMETHEUS=1 to skip Prometheus.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "services: $*" >&2; }

wait_port() { # host port tenths-of-a-second
  for _ in $(seq 1 "$3"); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then log "need root to install $*; install them and run again"; exit 1; fi
  log "installing $* from Debian's packages"
  if [ ! -f /tmp/.llmtap-apt-updated ]; then apt-get update -qq && touch /tmp/.llmtap-apt-updated; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- PostgreSQL ---------------------------------------------------------------
if ! wait_port 127.0.0.1 5432 2; then
  if command -v pg_ctlcluster >/dev/null; then
    ver=$(ls /etc/postgresql | sort -n | tail -1)
    log "starting PostgreSQL $ver"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  else
    log "PostgreSQL is not installed: apt-get install postgresql, then run again"; exit 1
  fi
  wait_port 127.0.0.1 5432 300 || { log "PostgreSQL did not come up on 127.0.0.1:5432"; exit 1; }
fi

# --- ClickHouse ---------------------------------------------------------------
if [ "${SKIP_CLICKHOUSE:-}" != 1 ] && ! wait_port 127.0.0.1 9000 2; then
  command -v clickhouse-server >/dev/null || apt_install clickhouse-server clickhouse-client
  dir=${LLMTAP_CH_DIR:-/tmp/llmtap-clickhouse}
  mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log}
  cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/error.log</errorlog><size>100M</size><count>2</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>8123</http_port>
  <tcp_port>9000</tcp_port>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>/etc/clickhouse-server/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>536870912</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
XML
  log "starting ClickHouse (data in $dir)"
  clickhouse-server --daemon --pid-file="$dir/server.pid" --config-file="$dir/config.xml" >/dev/null 2>&1 || true
  wait_port 127.0.0.1 9000 600 || { log "ClickHouse did not come up on 127.0.0.1:9000; see $dir/log/error.log"; exit 1; }
fi
# --- Prometheus (the Prometheus dashboard's queries run on a real one in tests) ------------------
if [ "${SKIP_PROMETHEUS:-}" != 1 ]; then
  command -v prometheus >/dev/null || apt_install prometheus
  # Debian's package starts a service of its own where systemd runs; tests start their own.
fi

# --- Node client for the end-to-end test (the official openai package) -----------------
if [ "${SKIP_NODE:-}" != 1 ] && [ ! -d testdata/e2e/node_modules/openai ]; then
  if command -v npm >/dev/null; then
    log "installing the openai npm package for the end-to-end test"
    (cd testdata/e2e && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  else
    log "npm not found: the end-to-end test with the openai client will fail; install nodejs and npm"
  fi
fi
log "ready: PostgreSQL 127.0.0.1:5432${SKIP_CLICKHOUSE:+}$( [ "${SKIP_CLICKHOUSE:-}" = 1 ] || echo ', ClickHouse 127.0.0.1:9000')"
