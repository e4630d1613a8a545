#!/usr/bin/env bash
# Every test, against real servers: brings up the local environment (installing
# MariaDB and Redis from Debian packages where missing), then runs the whole
# workspace's tests.
#
#   scripts/test.sh                 every test
#   scripts/test.sh -p projector    cargo test arguments pass through
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

scripts/dev-env.sh up

if [ $# -eq 0 ]; then
  set -- --workspace
fi
cargo test "$@" 2>&1
