#!/usr/bin/env bash
# Smoke checks of the rt binaries beyond `cargo test` (~15 s): rt-report prints valid JSON,
# rt-probe keeps and breaks a promise as asked, and (as root, tools present) a 1 s rt-bench
# round trip (two runs, so the medians path too) through the partition manager prints its
# verdict lines and leaves no cgroup behind. Figures are not judged here.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p rt --bins -q
bin="${CARGO_TARGET_DIR:-target}/release"

"$bin/rt-report" | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["online_cpus"], r; print("rt-report: cgroups", r["cgroup"]["mode"], "pool", r["default_rt_pool"])'

# A promise that must hold (p99 below 1 s) and one that must fail (p99 below 0 µs is impossible
# once any sample is ≥ 1 µs): exit codes 0 and 1.
"$bin/rt-probe" --loops 300 --interval-us 1000 --max-p99-us 1000000 --no-dma-latency >/dev/null
set +e
"$bin/rt-probe" --loops 300 --interval-us 1000 --max-p99-us 0 --no-dma-latency >/dev/null 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || { echo "rt-probe: expected exit 1 for a broken promise, got $rc" >&2; exit 1; }
echo "rt-probe: promise exit codes ok"

if [ "$(id -u)" = 0 ] && command -v stress-ng >/dev/null && command -v cyclictest >/dev/null \
    && [ "$(nproc)" -ge 2 ]; then
    out=$("$bin/rt-bench" --duration-s 0.5 --rounds 1 --warmup-s 0.3 --runs 2)
    for want in "median of 2 runs: ratios" "p99.9 (b)/(c) = " "(b) TTI misses / floor late wake-ups = "; do
        grep -qF "$want" <<<"$out" || { echo "rt-bench output lacks \"$want\":" >&2; echo "$out" >&2; exit 1; }
    done
    if ls -d /sys/fs/cgroup/*/slapos-edge-bench-* /sys/fs/cgroup/slapos-edge-bench-* >/dev/null 2>&1; then
        echo "rt-bench left cgroups behind" >&2
        exit 1
    fi
    echo "rt-bench: smoke run (2 runs of 0.5 s per configuration) ok"
elif [ "${SLAPOS_REQUIRE_PRIVILEGED:-0}" = 1 ] || [ "${SLAPOS_REQUIRE_TOOLS:-0}" = 1 ]; then
    echo "rt-bench smoke run required but not root / tools missing / single CPU" >&2
    exit 1
else
    echo "rt-bench smoke run skipped (needs root, stress-ng, cyclictest, 2 CPUs)"
fi
