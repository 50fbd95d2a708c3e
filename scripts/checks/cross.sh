#!/usr/bin/env bash
# CI check for cross builds (docs/cross.md):
#  1. cross/build.sh: minsize artefacts of the node-side binaries and the release slapos-master for
#     x86_64-musl, aarch64-musl and armv7-gnueabihf, with the size report
#     (target/cross-report.txt) and the NEEDED check. The
#     board test (cargo test, tests/tests/boards.rs) already built aarch64/armv7 with the same
#     command, so those are cargo no-ops here: each target is built once per CI run.
#  2. cross/test-emulated.sh: unit tests of the node-side crates under qemu-user, aarch64 + armv7.
# SLAPOS_CROSS_CHECK_TESTS=0 skips step 2.
set -euo pipefail
cd "$(dirname "$0")/../.."
. cross/lib.sh
# Both steps always run (a failed build still leaves the other results to read); the check fails
# if either did.
t0=$(date +%s) status=0
# The OPC-UA buffer (the release default on every target) is built here for aarch64 only: the
# same script and code path, ~4 min of fat LTO per target saved on CI's 2 cores (docs/cross.md);
# the master for x86_64 only (cross_ci_defaults, cross/lib.sh).
cross_ci_defaults
cross/build.sh || { status=1; echo "cross check: cross/build.sh FAILED" >&2; }
echo "cross check: builds done in $(( $(date +%s) - t0 ))s"
if [ "${SLAPOS_CROSS_CHECK_TESTS:-1}" = 1 ]; then
    t1=$(date +%s)
    cross/test-emulated.sh || { status=1; echo "cross check: cross/test-emulated.sh FAILED" >&2; }
    echo "cross check: emulated unit tests done in $(( $(date +%s) - t1 ))s"
fi
echo "cross check: $([ $status = 0 ] && echo ok || echo FAILED) in $(( $(date +%s) - t0 ))s"
exit $status
