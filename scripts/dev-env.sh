#!/usr/bin/env bash
# The local environment: two MariaDB shard servers (3307, 3308) with row
# binlogs and a Redis (6380) with AOF, all on private ports, data under
# .dev-env/ in the checkout. Never touches the machine's default services.
#
#   scripts/dev-env.sh up       start what is not running (idempotent), wait until ready
#   scripts/dev-env.sh down     stop what `up` started (by pid)
#   scripts/dev-env.sh status   say what runs and answers
#
# Ports and folder can be moved with RPS_ENV_DIR, RPS_MYSQL_PORTS ("3307 3308")
# and RPS_REDIS_PORT.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
env_dir=${RPS_ENV_DIR:-$root/.dev-env}
read -r -a mysql_ports <<<"${RPS_MYSQL_PORTS:-3307 3308}"
mysql_names=(mysql-a mysql-b mysql-c mysql-d)
redis_port=${RPS_REDIS_PORT:-6380}

log() { printf 'dev-env: %s\n' "$*" >&2; }

ensure_packages() {
  local missing=()
  command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
  command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
  command -v mariadb-binlog >/dev/null 2>&1 || missing+=(mariadb-client)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (Debian packages)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

mysql_up() {
  local name=$1 port=$2 server_id=$3
  local dir=$env_dir/$name
  local sock=$dir/mysqld.sock pidf=$dir/mysqld.pid
  mkdir -p "$dir"
  if pid_alive "$pidf"; then
    log "$name already running on $port (pid $(cat "$pidf"))"
  else
    if [ ! -d "$dir/data/mysql" ]; then
      log "$name: initialising data directory"
      mkdir -p "$dir/tmp"
      mariadb-install-db --no-defaults --datadir="$dir/data" --tmpdir="$dir/tmp" --user="$(id -un)" \
        --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1 \
        || { cat "$dir/install.log" >&2; exit 1; }
    fi
    log "$name: starting on port $port"
    mkdir -p "$dir/tmp"
    # --defaults-file must come first; the server settings the pipeline
    # requires live in sql/server.cnf, instance-specific ones follow.
    nohup mariadbd --defaults-file="$root/sql/server.cnf" \
      --datadir="$dir/data" --tmpdir="$dir/tmp" --port="$port" --socket="$sock" --pid-file="$pidf" \
      --server-id="$server_id" --log-error="$dir/error.log" --user="$(id -un)" \
      --log-basename="$name" --log-bin="$dir/data/binlog" \
      >/dev/null 2>&1 &
  fi
  for _ in $(seq 1 120); do
    if mariadb-admin --socket="$sock" -uroot ping >/dev/null 2>&1; then
      # TCP root for `rpsctl init` (admin_url); idempotent.
      mariadb --socket="$sock" -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
      return 0
    fi
    sleep 0.5
  done
  log "$name did not answer on $port; see $dir/error.log"
  tail -20 "$dir/error.log" >&2 || true
  exit 1
}

redis_up() {
  local dir=$env_dir/redis pidf=$env_dir/redis/redis.pid
  mkdir -p "$dir"
  if pid_alive "$pidf"; then
    log "redis already running on $redis_port (pid $(cat "$pidf"))"
  else
    log "redis: starting on port $redis_port (AOF on)"
    # Benchmarks write and delete millions of keys; with the default 64 MB
    # threshold the AOF was rewritten every few seconds (a fork taking one of
    # two cores). Sized as docs/operations.md advises operators to.
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" \
      --appendonly yes --appendfsync everysec --save "" \
      --auto-aof-rewrite-min-size 1gb \
      --daemonize yes --pidfile "$pidf" --logfile "$dir/redis.log" >/dev/null
  fi
  for _ in $(seq 1 60); do
    redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.25
  done
  log "redis did not answer on $redis_port; see $dir/redis.log"
  exit 1
}

stop_pid() {
  local what=$1 pidf=$2
  if pid_alive "$pidf"; then
    local pid
    pid=$(cat "$pidf")
    log "stopping $what (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidf"
}

case "${1:-}" in
  up)
    ensure_packages
    for i in "${!mysql_ports[@]}"; do
      mysql_up "${mysql_names[$i]}" "${mysql_ports[$i]}" "$((i + 1))"
    done
    redis_up
    log "ready: MariaDB on ${mysql_ports[*]}, Redis on $redis_port"
    ;;
  down)
    for i in "${!mysql_ports[@]}"; do
      stop_pid "${mysql_names[$i]}" "$env_dir/${mysql_names[$i]}/mysqld.pid"
    done
    stop_pid redis "$env_dir/redis/redis.pid"
    ;;
  status)
    rc=0
    for i in "${!mysql_ports[@]}"; do
      n=${mysql_names[$i]}
      if mariadb-admin --socket="$env_dir/$n/mysqld.sock" -uroot ping >/dev/null 2>&1; then
        echo "$n: up on ${mysql_ports[$i]} (pid $(cat "$env_dir/$n/mysqld.pid"))"
      else
        echo "$n: down"; rc=1
      fi
    done
    if redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG; then
      echo "redis: up on $redis_port (pid $(cat "$env_dir/redis/redis.pid" 2>/dev/null || echo '?'))"
    else
      echo "redis: down"; rc=1
    fi
    exit $rc
    ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
