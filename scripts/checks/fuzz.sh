#!/usr/bin/env bash
# CI job of the fuzz targets (fuzz/README.md, issue #19): builds the cargo-fuzz project, replays
# every committed seed and regression input (a crash fails the check), then fuzzes each target
# for a short budget (SLAPOS_FUZZ_CHECK_SECONDS, default 15 s; two targets at a time). Long
# runs: scripts/fuzz.sh. Skips with a reason without cargo-fuzz or a C++ compiler (installed by
# scripts/deps/fuzz.sh), unless SLAPOS_REQUIRE_TOOLS=1. SLAPOS_FUZZ_CHECK=0 skips it.
#
# The build goes to /var/cache/slapos-fuzz/target when root (kept between CI runs on a
# machine, like the cross check's caches). Measured on 2 cores: 3 min 20 s with that cache warm
# (a fresh clone rebuilds the workspace crates: ~2 min; fuzzing 80 s), 8 min 14 s cold (every
# dependency the targets link: axum, rustls, SQLite, minijinja…, 6 min 51 s).
set -euo pipefail
cd "$(dirname "$0")/../.."
t0=$SECONDS
if [ "${SLAPOS_FUZZ_CHECK:-1}" = 0 ]; then
    echo "fuzz check skipped (SLAPOS_FUZZ_CHECK=0)"
    exit 0
fi
missing=()
cargo fuzz --version >/dev/null 2>&1 || missing+=(cargo-fuzz)
command -v c++ >/dev/null 2>&1 || missing+=(c++)
if ((${#missing[@]})); then
    if [ "${SLAPOS_REQUIRE_TOOLS:-0}" = 1 ]; then
        echo "fuzz check: ${missing[*]} missing and SLAPOS_REQUIRE_TOOLS=1 (run scripts/deps/fuzz.sh)" >&2
        exit 1
    fi
    echo "fuzz check skipped: ${missing[*]} missing (run scripts/deps/fuzz.sh)"
    exit 0
fi
if [ -z "${FUZZ_TARGET_DIR:-}" ] && [ "$(id -u)" = 0 ]; then
    export FUZZ_TARGET_DIR=/var/cache/slapos-fuzz/target
fi
secs="${SLAPOS_FUZZ_CHECK_SECONDS:-15}"
status=0
scripts/fuzz.sh --replay all || status=1
FUZZ_SKIP_BUILD=1 FUZZ_JOBS="${FUZZ_JOBS:-2}" scripts/fuzz.sh all "$secs" || status=1
echo "fuzz check: $([ $status = 0 ] && echo ok || echo FAILED) in $((SECONDS - t0))s"
exit $status
