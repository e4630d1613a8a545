#!/usr/bin/env bash
# The local environment, on private ports with data under .dev-env/ in the
# checkout; never touches the machine's default services.
#   mariadb (default): two MariaDB shard servers (3307, 3308) with row binlogs
#                      and a Redis (6380) with AOF; rps.toml describes them.
#   mysql:             two MySQL 9.7 shard servers (3317, 3318) with row
#                      binlogs and GTIDs, and their own Redis (6381);
#                      rps-mysql.toml describes them. Debian bookworm has no
#                      MySQL server, so they run from Debian sid's packages
#                      inside a debootstrap'd root (.dev-env/mysql-root),
#                      built on first use (about 75 s: debootstrap, the
#                      packages, two initialisations) and reused. chroot
#                      needs root, so `up mysql` must run as root. The
#                      servers share the host's network and need no /proc
#                      or other mount in the root; their data, logs, pid
#                      files and sockets are in it under /var/lib/rps/NAME.
#   cluster:           the MariaDB shard servers of `mariadb` and a Redis
#                      Cluster of 3 masters and 3 replicas (6391-6396, AOF
#                      on, node timeout 2 s) made with `redis-cli --cluster
#                      create`; rps-cluster.toml describes it.
#   all:               mariadb and mysql (the cluster only when named; `down
#                      all` stops it too).
#
#   scripts/dev-env.sh up [mariadb|mysql|cluster|all]      start what is not running (idempotent), wait until ready
#   scripts/dev-env.sh down [mariadb|mysql|cluster|all]    stop what `up` started (by pid)
#   scripts/dev-env.sh status [mariadb|mysql|cluster|all]  say what runs and answers
#
# Ports and folder can be moved with RPS_ENV_DIR, RPS_MYSQL_PORTS ("3307 3308"),
# RPS_REDIS_PORT, RPS_MYSQL_FLAVOR_PORTS ("3317 3318"), RPS_MYSQL_REDIS_PORT and
# RPS_CLUSTER_PORTS ("6391 6392 6393 6394 6395 6396": masters first).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
env_dir=${RPS_ENV_DIR:-$root/.dev-env}
read -r -a mysql_ports <<<"${RPS_MYSQL_PORTS:-3307 3308}"
mysql_names=(mysql-a mysql-b mysql-c mysql-d)
redis_port=${RPS_REDIS_PORT:-6380}
read -r -a my_ports <<<"${RPS_MYSQL_FLAVOR_PORTS:-3317 3318}"
my_redis_port=${RPS_MYSQL_REDIS_PORT:-6381}
my_root=$env_dir/mysql-root
read -r -a cluster_ports <<<"${RPS_CLUSTER_PORTS:-6391 6392 6393 6394 6395 6396}"
cluster_dir=$env_dir/redis-cluster

log() { printf 'dev-env: %s\n' "$*" >&2; }

ensure_packages() {
  local missing=()
  command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
  command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
  command -v mariadb-binlog >/dev/null 2>&1 || missing+=(mariadb-client)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  # The metrics tests run a private Prometheus and promtool (the same package).
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  # The dashboard's browser test drives a headless Chromium.
  command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
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
  local redis_port=$1 dir=$2
  local pidf=$dir/redis.pid
  mkdir -p "$dir"
  if pid_alive "$pidf"; then
    log "redis already running on $redis_port (pid $(cat "$pidf"))"
  else
    log "redis: starting on port $redis_port (AOF on)"
    # The AOF as a deployment runs it (docs/operations.md), so benchmarks
    # meet the rewrites a deployment meets: Redis' rewrite thresholds (a
    # rewrite each time the AOF has doubled since the last, from 64 MB) and
    # an RDB base file (the preamble: the rewrite child writes, and a restart
    # loads, a snapshot rather than commands, both far faster).
    # no-appendfsync-on-rewrite yes: while the child writes, the AOF fsyncs
    # compete with it for the disk and can stall the main thread; skipping
    # them risks up to ~30 s of AOF if the machine (not Redis) crashes during
    # a rewrite, which the pipeline recovers like the usual last second: any
    # AOF prefix is consistent and the binlog holds the rest
    # (docs/recovery.md). No RDB snapshots besides.
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" \
      --appendonly yes --appendfsync everysec --save "" \
      --auto-aof-rewrite-percentage 100 --auto-aof-rewrite-min-size 64mb \
      --aof-use-rdb-preamble yes --no-appendfsync-on-rewrite yes \
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

# --- MySQL 9.7 from Debian sid, in a root of its own -------------------------

# Runs a command inside the sid root.
in_root() { chroot "$my_root" "$@"; }

ensure_mysql_root() {
  if [ -x "$my_root/usr/sbin/mysqld" ]; then
    return 0
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  if [ ! -d "$my_root" ]; then
    command -v debootstrap >/dev/null 2>&1 || {
      log "installing debootstrap (Debian package)"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq debootstrap >/dev/null
    }
    log "building a Debian sid root for MySQL 9.7 in $my_root (about a minute, once)"
    # An interrupted debootstrap can leave /proc or /sys mounted in the
    # partial root: unmount them, and never let rm cross into a mount.
    awk -v p="$my_root.partial/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r |
      while read -r m; do $sudo umount -l "$m" || true; done
    $sudo rm -rf --one-file-system "$my_root.partial"
    $sudo debootstrap --variant=minbase sid "$my_root.partial" >"$env_dir/debootstrap.log" 2>&1 \
      || { tail -20 "$env_dir/debootstrap.log" >&2; exit 1; }
    mv "$my_root.partial" "$my_root"
  fi
  log "installing mysql-server-core and mysql-client-core (Debian sid) in the root"
  # The suite's Release file can carry a Valid-Until already past on a mirror
  # snapshot; the packages are still signed.
  local apt=(apt-get -o Acquire::Check-Valid-Until=false -o Dpkg::Use-Pty=0 -qq)
  $sudo chroot "$my_root" dpkg --configure -a # finishes an interrupted install
  $sudo chroot "$my_root" "${apt[@]}" update >/dev/null
  $sudo chroot "$my_root" env DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y \
    --no-install-recommends mysql-server-core mysql-client-core >/dev/null
}

my_server_up() {
  local name=$1 port=$2 server_id=$3
  local inner=/var/lib/rps/$name
  local dir=$my_root$inner
  local sock=$inner/mysqld.sock pidf=$dir/mysqld.pid started=""
  mkdir -p "$my_root/etc/rps"
  cp "$root/sql/mysql.cnf" "$my_root/etc/rps/mysql.cnf"
  if pid_alive "$pidf"; then
    log "$name already running on $port (pid $(cat "$pidf"))"
  else
    if [ ! -d "$dir/data" ]; then
      # Initialised beside and renamed when done, so that an interrupted
      # initialisation is redone rather than started from.
      log "$name: initialising data directory (MySQL $(in_root mysqld --version | awk '{print $3}'))"
      mkdir -p "$dir"
      rm -rf "$dir/data.partial"
      in_root mysqld --no-defaults --initialize-insecure --datadir="$inner/data.partial" --user=root \
        >"$dir/install.log" 2>&1 || { cat "$dir/install.log" >&2; exit 1; }
      mv "$dir/data.partial" "$dir/data"
    fi
    log "$name: starting MySQL on port $port"
    mkdir -p "$dir/tmp"
    # --defaults-file must come first; the settings the pipeline requires
    # live in sql/mysql.cnf (copied into the root), instance ones follow.
    # chroot execs mysqld, so $! is the server itself.
    nohup chroot "$my_root" mysqld --defaults-file=/etc/rps/mysql.cnf \
      --datadir="$inner/data" --tmpdir="$inner/tmp" --port="$port" --socket="$sock" \
      --pid-file="$inner/mysqld.pid" --server-id="$server_id" --log-error="$inner/error.log" \
      --log-bin="$inner/data/binlog" --user=root >/dev/null 2>&1 &
    started=$!
  fi
  for _ in $(seq 1 120); do
    if in_root mysqladmin --socket="$sock" -uroot ping >/dev/null 2>&1; then
      # TCP root for `rpsctl init` (admin_url); idempotent.
      in_root mysql --socket="$sock" -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
      return 0
    fi
    if [ -n "$started" ] && ! kill -0 "$started" 2>/dev/null; then
      log "$name exited while starting (port $port taken?); see $dir/error.log"
      tail -20 "$dir/error.log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  log "$name did not answer on $port; see $dir/error.log"
  tail -20 "$dir/error.log" >&2 || true
  exit 1
}

mariadb_up() {
  for i in "${!mysql_ports[@]}"; do
    mysql_up "${mysql_names[$i]}" "${mysql_ports[$i]}" "$((i + 1))"
  done
  redis_up "$redis_port" "$env_dir/redis"
  log "ready: MariaDB on ${mysql_ports[*]}, Redis on $redis_port"
}

mysql_flavor_up() {
  [ "$(id -u)" -eq 0 ] || { log "the MySQL servers run under chroot: run as root"; exit 1; }
  ensure_mysql_root
  for i in "${!my_ports[@]}"; do
    my_server_up "${mysql_names[$i]}" "${my_ports[$i]}" "$((i + 1))"
  done
  redis_up "$my_redis_port" "$env_dir/redis-mysql"
  log "ready: MySQL $(in_root mysqld --version | awk '{print $3}') on ${my_ports[*]}, Redis on $my_redis_port"
}

mariadb_down() {
  for i in "${!mysql_ports[@]}"; do
    stop_pid "${mysql_names[$i]}" "$env_dir/${mysql_names[$i]}/mysqld.pid"
  done
  stop_pid redis "$env_dir/redis/redis.pid"
}

mysql_flavor_down() {
  for i in "${!my_ports[@]}"; do
    stop_pid "MySQL ${mysql_names[$i]}" "$my_root/var/lib/rps/${mysql_names[$i]}/mysqld.pid"
  done
  stop_pid "redis (MySQL environment)" "$env_dir/redis-mysql/redis.pid"
}

redis_status() {
  local port=$1 dir=$2
  if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
    echo "redis: up on $port (pid $(cat "$dir/redis.pid" 2>/dev/null || echo '?'))"
  else
    echo "redis: down"; return 1
  fi
}

mariadb_status() {
  local rc=0
  for i in "${!mysql_ports[@]}"; do
    n=${mysql_names[$i]}
    if mariadb-admin --socket="$env_dir/$n/mysqld.sock" -uroot ping >/dev/null 2>&1; then
      echo "$n: up on ${mysql_ports[$i]} (pid $(cat "$env_dir/$n/mysqld.pid"))"
    else
      echo "$n: down"; rc=1
    fi
  done
  redis_status "$redis_port" "$env_dir/redis" || rc=1
  return $rc
}

mysql_flavor_status() {
  local rc=0
  for i in "${!my_ports[@]}"; do
    n=${mysql_names[$i]}
    if [ -x "$my_root/usr/sbin/mysqld" ] \
      && in_root mysqladmin --socket="/var/lib/rps/$n/mysqld.sock" -uroot ping >/dev/null 2>&1; then
      echo "$n (MySQL): up on ${my_ports[$i]} (pid $(cat "$my_root/var/lib/rps/$n/mysqld.pid"))"
    else
      echo "$n (MySQL): down"; rc=1
    fi
  done
  redis_status "$my_redis_port" "$env_dir/redis-mysql" || rc=1
  return $rc
}

# --- Redis Cluster: 3 masters, 3 replicas ------------------------------------

cluster_node_up() {
  local port=$1 dir=$cluster_dir/$1
  mkdir -p "$dir"
  if pid_alive "$dir/redis.pid"; then
    return 0
  fi
  # The AOF settings of redis_up; a short node timeout so that a killed
  # master's replica is promoted within seconds (the failover tests).
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
    --appendonly yes --appendfsync everysec --save "" \
    --auto-aof-rewrite-percentage 100 --auto-aof-rewrite-min-size 64mb \
    --aof-use-rdb-preamble yes --no-appendfsync-on-rewrite yes \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
}

cluster_field() { redis-cli -p "$1" cluster info 2>/dev/null | tr -d '\r' | awk -F: -v k="$2" '$1 == k { print $2 }'; }

cluster_up() {
  ((${#cluster_ports[@]} == 6)) || { log "RPS_CLUSTER_PORTS needs six ports (3 masters, 3 replicas)"; exit 1; }
  log "redis cluster: starting nodes on ${cluster_ports[*]}"
  for p in "${cluster_ports[@]}"; do cluster_node_up "$p"; done
  for p in "${cluster_ports[@]}"; do
    for _ in $(seq 1 60); do
      redis-cli -p "$p" ping 2>/dev/null | grep -q PONG && break
      sleep 0.25
    done
    redis-cli -p "$p" ping 2>/dev/null | grep -q PONG \
      || { log "cluster node $p did not answer; see $cluster_dir/$p/redis.log"; exit 1; }
  done
  # nodes.conf keeps the cluster across restarts; only fresh nodes (each
  # knowing just itself) are joined.
  if [ "$(cluster_field "${cluster_ports[0]}" cluster_known_nodes)" = 1 ]; then
    log "redis cluster: creating (3 masters, 1 replica each)"
    local nodes=()
    for p in "${cluster_ports[@]}"; do nodes+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$cluster_dir/create.log" 2>&1 \
      || { tail -20 "$cluster_dir/create.log" >&2; exit 1; }
  fi
  for _ in $(seq 1 120); do
    local ok=1
    for p in "${cluster_ports[@]}"; do
      [ "$(cluster_field "$p" cluster_state)" = ok ] || ok=0
    done
    if ((ok)); then
      log "ready: Redis Cluster on ${cluster_ports[*]}"
      return 0
    fi
    sleep 0.5
  done
  log "the cluster did not reach state ok; redis-cli -p ${cluster_ports[0]} cluster nodes:"
  redis-cli -p "${cluster_ports[0]}" cluster nodes >&2 || true
  exit 1
}

cluster_down() {
  for p in "${cluster_ports[@]}"; do
    stop_pid "redis cluster node $p" "$cluster_dir/$p/redis.pid"
  done
}

cluster_status() {
  local rc=0 p state
  for p in "${cluster_ports[@]}"; do
    state=$(cluster_field "$p" cluster_state)
    if [ -n "$state" ]; then
      echo "redis cluster node $p: up, cluster state $state, $(redis-cli -p "$p" role 2>/dev/null | head -1)"
      [ "$state" = ok ] || rc=1
    else
      echo "redis cluster node $p: down"; rc=1
    fi
  done
  return $rc
}

action=${1:-}
flavor=${2:-mariadb}
case "$flavor" in
  mariadb) flavors=(mariadb) ;;
  mysql) flavors=(mysql_flavor) ;;
  cluster) flavors=(mariadb cluster) ;;
  all) flavors=(mariadb mysql_flavor) ;;
  *) echo "usage: $0 up|down|status [mariadb|mysql|cluster|all]" >&2; exit 2 ;;
esac
mkdir -p "$env_dir"
case "$action" in
  up)
    ensure_packages
    for f in "${flavors[@]}"; do "${f}_up"; done
    ;;
  down)
    # The cluster shares the MariaDB servers: `down cluster` stops only its
    # nodes, `down all` everything.
    case "$flavor" in
      cluster) flavors=(cluster) ;;
      all) flavors=(mariadb mysql_flavor cluster) ;;
    esac
    for f in "${flavors[@]}"; do "${f}_down"; done
    ;;
  status)
    rc=0
    for f in "${flavors[@]}"; do "${f}_status" || rc=1; done
    exit $rc
    ;;
  *)
    echo "usage: $0 up|down|status [mariadb|mysql|cluster|all]" >&2
    exit 2
    ;;
esac
