#!/usr/bin/env bash
# The whole test suite: formatting, lints, every unit, golden, integration and end-to-end test (real etcd, real
# sockets, the real binaries), and the kind suite when a cluster is reachable (it says so when it is not).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh tests
# The build needs several GB of disk; say how much there is, so that a full disk is plain in the log.
df -h . | sed 's/^/disk: /'

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build binaries (the end-to-end tests run them)"
cargo build --workspace --bins
echo "== cargo test"
cargo test --workspace
echo "== local stack check (the README's first command, non-interactive)"
target/debug/sluice-stack --manifests config/examples --http-port 0 --https-port 0 --check
echo "== chart and packaging tests"
.local/venv/bin/python -m pytest -q charts/tests
echo "== kind end-to-end suite"
e2e/kind/run.sh
echo "disk: target/ holds $(du -sh target | cut -f1)"
