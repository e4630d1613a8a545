#!/usr/bin/env bash
# Every test, against real servers: brings up the local environment
# (MariaDB and Redis from Debian packages, MySQL 9.7 from Debian sid in a
# root of its own; each installed where missing), then runs the whole
# workspace's tests once per server flavor, and once more on MariaDB with
# the shared Redis replaced by a Redis Cluster of 3 masters and 3 replicas.
# One harness: the tests pick their servers by RPS_TEST_FLAVOR
# (test-support's TestFlavor) and their Redis by RPS_TEST_REDIS_URL; tests
# that start a Redis of their own (kill -9, persistence) keep it.
#
#   scripts/test.sh                 every test, on MariaDB, on MySQL, on the cluster
#   scripts/test.sh -p projector    cargo test arguments pass through
#   RPS_TEST_FLAVORS=mysql scripts/test.sh    one flavor only
#   RPS_TEST_FLAVORS="mariadb cluster" ...    the flavors to run, `cluster` included
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

read -r -a flavors <<<"${RPS_TEST_FLAVORS:-mariadb mysql cluster}"
scripts/dev-env.sh up all
if [[ " ${flavors[*]} " == *" cluster "* ]]; then
  scripts/dev-env.sh up cluster
fi
read -r -a cluster_ports <<<"${RPS_CLUSTER_PORTS:-6391 6392 6393 6394 6395 6396}"
cluster_url="redis-cluster://127.0.0.1:${cluster_ports[0]}?node=127.0.0.1:${cluster_ports[1]}&node=127.0.0.1:${cluster_ports[2]}"

if [ $# -eq 0 ]; then
  set -- --workspace
fi
status=0
for flavor in "${flavors[@]}"; do
  if [ "$flavor" = cluster ]; then
    echo "test.sh: === every test against mariadb, the shared Redis a cluster ==="
    RPS_TEST_FLAVOR=mariadb RPS_TEST_REDIS_URL=$cluster_url cargo test --no-fail-fast "$@" 2>&1 || status=1
  else
    echo "test.sh: === every test against $flavor ==="
    RPS_TEST_FLAVOR=$flavor cargo test --no-fail-fast "$@" 2>&1 || status=1
  fi
done
exit $status
