#!/usr/bin/env bash
# Installs what building and testing sluice needs and is not on a fresh machine: protoc (etcd-client's build
# script needs it), redis-server (the tests' and the local stack's Redis for Redis-backed limits; it is not
# started as a service), and with the argument `tests` the Python packages of the chart tests. Safe to run again:
# it only installs what is missing.
set -euo pipefail

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # The package starts a system Redis on 6379; sluice's tests and local stack start their own on free ports.
  if [[ " ${need_apt[*]} " == *" redis-server "* ]] && command -v systemctl >/dev/null 2>&1; then
    "${sudo_cmd[@]}" systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo (the Rust toolchain) is required; install it with rustup" >&2
  exit 1
fi

# The chart and packaging tests (charts/tests) run in a Python venv with pinned packages; reinstalled only when
# charts/tests/requirements.txt changes. Only the test suite needs it (`scripts/setup.sh tests`).
[ "${1:-}" = tests ] || exit 0
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.local/venv"
reqs="$root/charts/tests/requirements.txt"
stamp="$venv/.requirements.sha256"
if [ ! -f "$stamp" ] || [ "$(sha256sum < "$reqs")" != "$(cat "$stamp")" ]; then
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "setup: installing python3-venv" >&2
    sudo_cmd=()
    [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq python3-venv >/dev/null
  fi
  echo "setup: installing the chart test requirements into .local/venv" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$reqs"
  sha256sum < "$reqs" > "$stamp"
fi
