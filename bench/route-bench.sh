#!/usr/bin/env bash
# Builds the release data plane and benchmarks, then runs the routing-engine report and the route-burst load test.
# Usage: bench/route-bench.sh [ROUTES]   (default 100000). Criterion: cargo bench -p sluice-bench --bench router
set -euo pipefail
cd "$(dirname "$0")/.."
routes="${1:-100000}"
cargo build --release -p sluice-dataplane -p sluice-bench --bins
echo "== route-table ($routes routes)"
target/release/route-table "$routes"
echo "== route-burst ($routes routes, 1,000 changes under load)"
target/release/route-burst "$routes"
