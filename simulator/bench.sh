#!/usr/bin/env bash
# Simulator write-rate benchmark beside its baseline, in one run:
#   1. baseline: one client, back-to-back 1000-row INSERTs into one shard of
#      one server (examples/baseline_insert.rs), once per server;
#   2. `rpsctl simulate` across both servers, RUNS times.
# Works in its own databases (bench_shard_*), dropped at the end, on the
# local environment (scripts/dev-env.sh up).
#
#   simulator/bench.sh [RUNS] [MATCHES]      defaults: 3 runs of 100000 matches
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
runs=${1:-3}
matches=${2:-100000}
read -r -a ports <<<"${RPS_MYSQL_PORTS:-3307 3308}"

# RPS_BENCH_NO_BUILD=1 reuses the binaries already in target/release.
if [ -z "${RPS_BENCH_NO_BUILD:-}" ]; then
  cargo build --release -q -p rpsctl
  cargo build --release -q -p simulator --example baseline_insert
fi

config=$(mktemp --suffix=.toml)
cleanup() {
  for i in 0 1; do
    for s in 0 1 2 3 4 5 6 7; do
      mariadb -h127.0.0.1 -P"${ports[$i]}" -uroot -e "DROP DATABASE IF EXISTS bench_shard_$s" 2>/dev/null || true
    done
  done
  rm -f "$config"
}
trap cleanup EXIT
cat >"$config" <<TOML
shard_count = 8
database_prefix = "bench_shard_"
[redis]
url = "redis://127.0.0.1:6380"
prefix = "bench"
[api]
bind = "127.0.0.1:0"
[[servers]]
name = "mysql-a"
url = "mysql://rps_pipeline:rps_pipeline_pw@127.0.0.1:${ports[0]}"
admin_url = "mysql://root@127.0.0.1:${ports[0]}"
shards = [0, 2, 4, 6]
[[servers]]
name = "mysql-b"
url = "mysql://rps_pipeline:rps_pipeline_pw@127.0.0.1:${ports[1]}"
admin_url = "mysql://root@127.0.0.1:${ports[1]}"
shards = [1, 3, 5, 7]
TOML
target/release/rpsctl --config "$config" init >/dev/null

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for shard in 0 1; do
  target/release/examples/baseline_insert "$config" 200000 "$shard"
done
for run in $(seq 1 "$runs"); do
  echo "run $run: rpsctl simulate --players 10000 --matches $matches --seed $run"
  RUST_LOG=warn target/release/rpsctl --config "$config" simulate \
    --players 10000 --matches "$matches" --seed "$run" | sed -n '1,2p'
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
