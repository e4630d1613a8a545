#!/usr/bin/env bash
# The main job: the local environment, a build, `rpsctl init`, the
# whole pipeline (`rpsctl run`: cdc-reader, projector, compensator, API) and
# a simulated tournament with abandoned and voided matches, shown live.
#
#   scripts/demo.sh                 live view while the tournament runs, then
#                                   the API keeps serving until Ctrl-C
#   scripts/demo.sh --once          a short tournament at full speed; waits
#                                   until the read models equal the event
#                                   store, prints the leaderboard, exits 0
#   scripts/demo.sh --mysql ...     the same on the local MySQL 9.7 pair
#                                   (dev-env.sh up mysql, rps-mysql.toml)
#   scripts/demo.sh --release ...   an optimised build (target/release), as
#                                   deployed and benchmarked; the default
#                                   `demo` profile builds in under a third
#                                   of its time and plays a tournament as
#                                   well
#   options: --matches N --players N [--rate MATCHES_PER_S] [--seed N]
#
# Config: RPS_CONFIG (default rps.toml, or rps-mysql.toml with --mysql, at
# the repository root).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

config=${RPS_CONFIG:-}
flavor=mariadb
profile=demo
once=0
matches=""
players=1000
rate=""
seed=""
env_pid=""
pipeline_pid=""
sim_pid=""
top_pid=""
logs=$root/.dev-env/demo
api=""

log() { printf '\n== %s\n' "$*" >&2; }

usage() {
  sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

parse_args() {
  while (($#)); do
    case "$1" in
      --once) once=1 ;;
      --mysql) flavor=mysql ;;
      --release) profile=release ;;
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

# The local environment comes up while rpsctl builds: on a fresh machine
# both spend minutes (packages, a MySQL root; compiling), mostly on
# different things (network and disk; the CPU).
env_up_start() {
  mkdir -p "$logs"
  log "local environment, beside the build (log: $logs/dev-env.log)"
  scripts/dev-env.sh up "$flavor" >"$logs/dev-env.log" 2>&1 &
  env_pid=$!
}

env_up_wait() {
  if ! wait "$env_pid"; then
    echo "demo.sh: the local environment did not come up; last lines of $logs/dev-env.log:" >&2
    tail -20 "$logs/dev-env.log" >&2
    exit 1
  fi
  env_pid=""
  tail -1 "$logs/dev-env.log"
}

build() {
  log "building rpsctl (profile $profile)"
  cargo build --profile "$profile" -p rpsctl
}

init_shards() {
  log "rpsctl init"
  "$rpsctl" --config "$config" init
}

stop_all() {
  for pid in "$top_pid" "$sim_pid" "$pipeline_pid"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for pid in "$top_pid" "$sim_pid" "$pipeline_pid"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
}

start_pipeline() {
  log "starting the pipeline: rpsctl run (log: $logs/pipeline.log)"
  mkdir -p "$logs"
  RUST_LOG=${RUST_LOG:-info} "$rpsctl" --config "$config" run >"$logs/pipeline.log" 2>&1 &
  pipeline_pid=$!
  trap stop_all EXIT
  trap 'exit 130' INT TERM
  # Ready when the API answers and every reader has stored its position.
  for _ in $(seq 1 600); do
    if ! kill -0 "$pipeline_pid" 2>/dev/null; then
      echo "demo.sh: the pipeline stopped; last lines of $logs/pipeline.log:" >&2
      tail -20 "$logs/pipeline.log" >&2
      exit 1
    fi
    if "$rpsctl" --config "$config" status --json 2>/dev/null |
      grep -q '"generation"' && ! "$rpsctl" --config "$config" status --json 2>/dev/null | grep -q '"checkpoint_raw": *null'; then
      return 0
    fi
    sleep 0.5
  done
  echo "demo.sh: the pipeline did not become ready; see $logs/pipeline.log" >&2
  exit 1
}

# A tournament the way the game servers would write it; deadlines are short
# so that abandoned matches time out while you watch.
simulate_args() {
  local args=(simulate --players "$players" --matches "$matches" --abandoned 0.05 --voided 0.03 --deadline 5s)
  [ -n "$rate" ] && args+=(--rate "$rate")
  [ -n "$seed" ] && args+=(--seed "$seed")
  echo "${args[@]}"
}

# The read models equal the fold of every event table (rpsctl verify) and
# no deadline is left open.
wait_caught_up() {
  log "waiting until the read models equal the event store (rpsctl verify)"
  for _ in $(seq 1 120); do
    if "$rpsctl" --config "$config" verify >"$logs/verify.log" 2>&1 &&
      "$rpsctl" --config "$config" status --json 2>/dev/null | grep -q '"deadlines_pending": *0'; then
      echo "read models verified equal to the event store"
      return 0
    fi
    sleep 2
  done
  echo "demo.sh: the read models did not converge; see $logs/verify.log and $logs/pipeline.log" >&2
  tail -20 "$logs/verify.log" >&2
  exit 1
}

demo_once() {
  matches=${matches:-5000}
  log "simulated tournament: $matches matches among $players players, full speed"
  # shellcheck disable=SC2046
  RUST_LOG=${RUST_LOG:-warn} "$rpsctl" --config "$config" $(simulate_args)
  wait_caught_up
  log "final state"
  "$rpsctl" --config "$config" top --once
  rows_per_shard
  echo
  echo "API was at http://$api (e.g. curl 'http://$api/v1/leaderboard?limit=10')"
}

demo_live() {
  matches=${matches:-50000}
  rate=${rate:-300}
  log "simulated tournament: $matches matches among $players players at $rate matches/s (log: $logs/simulate.log)"
  # shellcheck disable=SC2046
  RUST_LOG=${RUST_LOG:-warn} "$rpsctl" --config "$config" $(simulate_args) >"$logs/simulate.log" 2>&1 &
  sim_pid=$!
  "$rpsctl" --config "$config" top &
  top_pid=$!
  wait "$sim_pid" || { echo "demo.sh: the simulator failed; see $logs/simulate.log" >&2; exit 1; }
  sim_pid=""
  wait_caught_up
  kill "$top_pid" 2>/dev/null || true
  wait "$top_pid" 2>/dev/null || true
  top_pid=""
  "$rpsctl" --config "$config" top --once
  echo
  echo "Tournament over. The API serves at http://$api, for example:"
  echo "  curl 'http://$api/v1/leaderboard?limit=10'"
  echo "  curl 'http://$api/v1/status'"
  echo "Ctrl-C stops the pipeline."
  wait "$pipeline_pid"
}

# Counts straight from each server as root, independent of the simulator's
# own report.
rows_per_shard() {
  log "rows per shard per server (from the servers)"
  local ports prefix
  if [ "$flavor" = mysql ]; then
    read -r -a ports <<<"${RPS_MYSQL_FLAVOR_PORTS:-3317 3318}"
  else
    read -r -a ports <<<"${RPS_MYSQL_PORTS:-3307 3308}"
  fi
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
  rpsctl=$root/target/$profile/rpsctl
  if [ -z "$config" ]; then
    if [ "$flavor" = mysql ]; then config=$root/rps-mysql.toml; else config=$root/rps.toml; fi
  fi
  api=$(sed -n '/^\[api\]/,/^\[/s/^bind *= *"\(.*\)".*/\1/p' "$config" | head -1)
  env_up_start
  build
  env_up_wait
  init_shards
  start_pipeline
  if ((once)); then
    demo_once
  else
    demo_live
  fi
}

main "$@"
