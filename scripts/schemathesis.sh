#!/usr/bin/env bash
# Schemathesis (the OpenAPI fuzzer, from PyPI) in a virtualenv of its own
# under .dev-env/, installed on first use: python3 and python3-venv from
# Debian packages where missing, then a pinned schemathesis with pip.
# api/tests/schemathesis.rs runs it against a live API; it also works by hand.
#
#   scripts/schemathesis.sh install              install if missing, nothing else
#   scripts/schemathesis.sh run URL [OPTIONS]    `st run …` (see `st run --help`)
#   scripts/schemathesis.sh ARGS…                any other `st` command
#
# Exit status 3 means it could not be installed (no network, no PyPI, no
# way to install Debian packages); the message says which step failed.
# RPS_SCHEMATHESIS_VERSION picks another version, RPS_ENV_DIR another folder.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
env_dir=${RPS_ENV_DIR:-$root/.dev-env}
version=${RPS_SCHEMATHESIS_VERSION:-4.32.5}
venv=$env_dir/schemathesis
stamp=$venv/.installed-$version

log() { printf 'schemathesis.sh: %s\n' "$*" >&2; }
fail_install() {
  log "cannot install schemathesis $version: $*"
  exit 3
}

apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    # Non-interactive: under `cargo test` a password prompt would hang.
    sudo -n true 2>/dev/null || fail_install "the Debian packages $* are missing and installing them needs root (run: sudo apt-get install $*)"
    sudo="sudo -n"
  fi
  log "installing $* (Debian packages)"
  $sudo apt-get update -qq || fail_install "apt-get update failed (no network?)"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || fail_install "apt-get install $* failed"
}

install() {
  [ -f "$stamp" ] && return 0
  if ! command -v python3 >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || fail_install "python3 is missing and this is not a Debian-like system"
    apt_install python3 python3-venv
  fi
  # Debian ships venv without ensurepip unless python3-venv is installed.
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || fail_install "python3 cannot create virtualenvs (venv/ensurepip missing)"
    apt_install python3-venv
  fi
  log "installing schemathesis $version into $venv (from PyPI)"
  mkdir -p "$env_dir"
  # Built in place: a venv's scripts name their interpreter by absolute
  # path, so one moved after creation no longer runs. The stamp, written
  # last, is what says it is complete.
  rm -rf "$venv"
  python3 -m venv "$venv" >/dev/null || fail_install "python3 -m venv failed"
  # Few retries and a short timeout: without network this should fail in
  # seconds with pip's own reason, not after minutes.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --retries 2 --timeout 20 "schemathesis==$version" \
    || fail_install "pip install schemathesis==$version failed (is https://pypi.org reachable? a proxy goes in PIP_INDEX_URL / HTTPS_PROXY)"
  touch "$stamp"
}

mkdir -p "$env_dir"
# One installer at a time: tests of several checkouts or flavors may start together.
exec 9>"$env_dir/schemathesis.lock"
flock 9
install
flock -u 9

if [ "${1:-}" = install ]; then
  "$venv/bin/st" --version
  exit 0
fi
exec "$venv/bin/st" "$@"
