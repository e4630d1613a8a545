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
#
# The tests are built once; then the MySQL pass runs beside the MariaDB
# pass (they share no server), and the cluster pass after the MariaDB one
# (it uses the same MariaDB servers). A pass spends most of its time
# waiting on servers, so two at once nearly halve the wall clock on two
# cores. Each pass writes its own log under .dev-env/test-logs/; they are
# printed whole, one after the other, with a summary at the end.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

read -r -a flavors <<<"${RPS_TEST_FLAVORS:-mariadb mysql cluster}"
wants() { [[ " ${flavors[*]} " == *" $1 "* ]]; }

scripts/dev-env.sh up all
if wants cluster; then
  scripts/dev-env.sh up cluster
fi
read -r -a cluster_ports <<<"${RPS_CLUSTER_PORTS:-6391 6392 6393 6394 6395 6396}"
cluster_url="redis-cluster://127.0.0.1:${cluster_ports[0]}?node=127.0.0.1:${cluster_ports[1]}&node=127.0.0.1:${cluster_ports[2]}"

if [ $# -eq 0 ]; then
  set -- --workspace
fi

# Tests that bring a Redis (or a cluster) of their own: the cluster pass
# would run them exactly as the MariaDB pass does.
own_redis=(
  a_million_rows_across_all_shards_arrive_exactly_once
  a_redis_restart_mid_stream_loses_and_repeats_nothing
  a_read_reply_lost_on_the_wire_is_applied_not_skipped
  flushall_mid_load_is_detected_and_rebuilt
  redis_kill9_with_aof_resumes_without_rebuild
  a_master_killed_under_load_is_replaced_and_the_read_models_end_equal_to_the_fold
  slots_moved_under_load_leave_read_models_equal_to_the_fold
  projector_and_compensator_are_not_ready_while_redis_is_gone
  pipeline_over_tls_with_secrets_from_the_environment
  a_wrong_ca_is_a_definite_error_that_says_so
  redis_tls_modes_check_what_they_promise
  a_killed_master_is_replaced_and_keeps_what_its_replica_acknowledged
  an_ask_redirection_amid_pipelined_commands_gives_every_caller_its_own_reply
  switch_steps_and_generation_scans_on_a_cluster
)

# The cargo arguments of a pass, with `--skip` filters for the test
# binaries appended after the caller's own `--` (or a new one).
with_skips() {
  local -n out=$1
  shift
  local skips=() a has_separator=0
  for a in "${own_redis[@]}"; do skips+=(--skip "$a"); done
  out=("${cargo_args[@]}")
  for a in "${cargo_args[@]}"; do [ "$a" = -- ] && has_separator=1; done
  ((has_separator)) || out+=(--)
  out+=("${skips[@]}")
}

cargo_args=("$@")
logs=$root/.dev-env/test-logs
mkdir -p "$logs"
rm -f "$logs"/*.log "$logs"/*.status

echo "test.sh: building the tests"
cargo test --no-run "${cargo_args[@]}"

# One pass: its tests, its log, its exit status in a file.
run_pass() {
  local pass=$1 status=0
  echo "test.sh: === pass $pass started ($(date -u +%H:%M:%S)) ==="
  case "$pass" in
    cluster)
      local args
      with_skips args
      RPS_TEST_FLAVOR=mariadb RPS_TEST_REDIS_URL=$cluster_url \
        cargo test --no-fail-fast "${args[@]}" >"$logs/$pass.log" 2>&1 || status=1
      ;;
    *)
      RPS_TEST_FLAVOR=$pass cargo test --no-fail-fast "${cargo_args[@]}" \
        >"$logs/$pass.log" 2>&1 || status=1
      ;;
  esac
  echo "$status" >"$logs/$pass.status"
  echo "test.sh: === pass $pass ended ($(date -u +%H:%M:%S)), status $status ==="
}

# The MariaDB lane (MariaDB, then the cluster on the same MariaDB servers)
# beside the MySQL lane.
lane_mariadb() {
  if wants mariadb; then run_pass mariadb; fi
  if wants cluster; then run_pass cluster; fi
}
lane_mariadb &
mariadb_lane=$!
if wants mysql; then run_pass mysql; fi
wait "$mariadb_lane" || true

status=0
summary=()
for pass in mariadb mysql cluster; do
  wants "$pass" || continue
  echo
  echo "test.sh: ======== the $pass pass ========"
  cat "$logs/$pass.log"
  pass_status=$(cat "$logs/$pass.status" 2>/dev/null || echo 1)
  [ "$pass_status" = 0 ] || status=1
  counts=$(awk '/^test result:/ {p+=$4; f+=$6; i+=$8} END {printf "%d passed, %d failed, %d ignored", p, f, i}' "$logs/$pass.log")
  summary+=("$pass: $counts$( [ "$pass_status" = 0 ] || echo ' (FAILED)')")
  failed=$(grep -E '^test .* \.\.\. FAILED$' "$logs/$pass.log" | sed 's/^test \(.*\) \.\.\. FAILED$/\1/' || true)
  if [ -n "$failed" ]; then
    while read -r name; do summary+=("  failed: $name"); done <<<"$failed"
    # The first lines of each panic, so that the end of the output alone
    # says what went wrong.
    while read -r line; do summary+=("    $line"); done < <(
      grep -A3 -E "panicked at" "$logs/$pass.log" | grep -v -E '^--$|^note: ' | head -40 | cut -c1-300
    )
  fi
done
echo
echo "test.sh: summary"
printf '  %s\n' "${summary[@]}"
exit $status
