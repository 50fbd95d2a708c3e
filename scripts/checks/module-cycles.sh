#!/usr/bin/env bash
# No import cycle between the modules of master-lite and node-edge (issue 18): the module graph
# of each crate (scripts/module-graph.py) must have no strongly connected component.
set -euo pipefail
cd "$(dirname "$0")/../.."
status=0
for src in master-lite/src node-edge/src; do
    if ! out=$(python3 scripts/module-graph.py "$src"); then
        echo "$out" | grep CYCLE
        status=1
    else
        echo "$out" | tail -1
    fi
done
exit $status
