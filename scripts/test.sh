#!/usr/bin/env bash
# Every test, against real servers: brings up the local environment
# (MariaDB and Redis from Debian packages, MySQL 9.7 from Debian sid in a
# root of its own; each installed where missing), then runs the whole
# workspace's tests once per server flavor. One harness, two flavors: the
# tests pick their servers by RPS_TEST_FLAVOR (test-support's TestFlavor).
#
#   scripts/test.sh                 every test, on MariaDB and on MySQL
#   scripts/test.sh -p projector    cargo test arguments pass through
#   RPS_TEST_FLAVORS=mysql scripts/test.sh    one flavor only
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

read -r -a flavors <<<"${RPS_TEST_FLAVORS:-mariadb mysql}"
scripts/dev-env.sh up all

if [ $# -eq 0 ]; then
  set -- --workspace
fi
for flavor in "${flavors[@]}"; do
  echo "test.sh: === every test against $flavor ==="
  RPS_TEST_FLAVOR=$flavor cargo test --no-fail-fast "$@" 2>&1
done
