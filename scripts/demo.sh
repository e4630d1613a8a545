#!/usr/bin/env bash
# The main job: local environment up, release build, `rpsctl init`, a
# simulated tournament written into every shard, then rows per shard per
# server.
#
#   scripts/demo.sh                       the demo with its defaults
#   scripts/demo.sh --once                run the tournament once and exit
#   scripts/demo.sh --matches 50000 --players 2000 [--rate 500] [--seed 7]
#
# Config: RPS_CONFIG (default rps.toml at the repository root). Each stage
# is a function called from main() at the bottom, so pipeline stages
# (cdc-reader, projector, compensator, API) slot in between.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

config=${RPS_CONFIG:-$root/rps.toml}
rpsctl=$root/target/release/rpsctl
once=0
matches=20000
players=1000
rate=""
seed=""

log() { printf '\n== %s\n' "$*" >&2; }

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

parse_args() {
  while (($#)); do
    case "$1" in
      --once) once=1 ;;
      --matches) matches=${2:?--matches needs a number}; shift ;;
      --players) players=${2:?--players needs a number}; shift ;;
      --rate) rate=${2:?--rate needs a number}; shift ;;
      --seed) seed=${2:?--seed needs a number}; shift ;;
      -h|--help) usage 0 ;;
      *) echo "demo.sh: unknown argument $1" >&2; usage ;;
    esac
    shift
  done
}

env_up() {
  log "local environment"
  scripts/dev-env.sh up
}

build() {
  log "building rpsctl (release)"
  cargo build --release -p rpsctl
}

init_shards() {
  log "rpsctl init"
  "$rpsctl" --config "$config" init
}

simulate_tournament() {
  log "simulated tournament: $matches matches among $players players"
  local args=(simulate --players "$players" --matches "$matches")
  [ -n "$rate" ] && args+=(--rate "$rate")
  [ -n "$seed" ] && args+=(--seed "$seed")
  RUST_LOG=${RUST_LOG:-warn} "$rpsctl" --config "$config" "${args[@]}"
}

# Counts straight from each server as root, independent of the simulator's
# own report.
rows_per_shard() {
  log "rows per shard per server (from the servers)"
  local ports prefix
  read -r -a ports <<<"${RPS_MYSQL_PORTS:-3307 3308}"
  prefix=$(sed -n 's/^database_prefix *= *"\(.*\)".*/\1/p' "$config")
  prefix=${prefix:-rps_shard_}
  for port in "${ports[@]}"; do
    echo "server on port $port:"
    local dbs
    dbs=$(mariadb -h127.0.0.1 -P"$port" -uroot -N -B -e \
      "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE '${prefix//_/\\_}%' ORDER BY schema_name")
    for db in $dbs; do
      mariadb -h127.0.0.1 -P"$port" -uroot -N -B -e \
        "SELECT CONCAT('  ', '$db', ': ', COUNT(*), ' rows, ', COUNT(DISTINCT match_id), ' matches') FROM \`$db\`.match_result_events"
    done
  done
}

main() {
  parse_args "$@"
  env_up
  build
  init_shards
  simulate_tournament
  rows_per_shard
  if ((once)); then
    return 0
  fi
  # The pipeline stages (cdc-reader, projector, compensator, API) follow
  # here once they exist; until then one tournament is the whole demo.
}

main "$@"
