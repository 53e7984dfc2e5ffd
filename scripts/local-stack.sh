#!/usr/bin/env bash
# The local stack: a real etcd, the example echo backends, the controller reading config/examples/ (manifest-
# directory mode) and the data plane on http://127.0.0.1:9080. Prints curl lines that work; Ctrl-C stops all.
# Extra arguments go to sluice-stack (for example --check to verify and exit).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins
exec target/debug/sluice-stack --manifests config/examples "$@"
