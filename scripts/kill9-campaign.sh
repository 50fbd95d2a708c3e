#!/usr/bin/env bash
# kill -9 campaign (issue 19): the master, the node and the buffer killed at random moments,
# ROUNDS times each (default 100), on disk; invariants checked after every restart (see
# tests/src/bin/kill9-campaign.rs). Long: not part of scripts/test.sh. Run as root.
#
#   scripts/kill9-campaign.sh [ROUNDS] [master|node|buffer ...]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-100}
shift || true
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(master node buffer)
cargo build -q -p master-lite -p node-edge -p buffer -p slapos-tests --bins
status=0
for p in "${parts[@]}"; do
    target/debug/kill9-campaign "$p" "$rounds" || status=1
done
exit $status
