#!/usr/bin/env bash
# Smoke checks of the rt binaries beyond `cargo test` (~15 s): rt-report prints valid JSON,
# rt-probe keeps and breaks a promise as asked, and (as root, tools present) a 1 s rt-bench
# round trip (two runs, so the medians path too) through the partition manager prints its
# verdict lines, leaves no cgroup behind and unbound kernel threads' and IRQs' affinities as
# they were; and so does a run stopped by SIGTERM while its partitions are applied.
# Figures are not judged here.
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
    # pid, comm and affinity of every kernel thread whose affinity is more than one CPU (the
    # ones rt steers), to compare before and after; kworkers come and go, so left out.
    unbound_kthreads() {
        for d in /proc/[0-9]*; do
            read -r flags < <(sed 's/.*) //' "$d/stat" 2>/dev/null | cut -d' ' -f7) || continue
            [ -n "$flags" ] && (( flags & 0x200000 )) || continue
            comm=$(cat "$d/comm" 2>/dev/null) || continue
            [[ $comm == kworker/* ]] && continue
            cpus=$(sed -n 's/^Cpus_allowed_list:\t//p' "$d/status" 2>/dev/null) || continue
            [[ $cpus == *[,-]* ]] && echo "${d#/proc/} $comm $cpus"
        done
    }
    irqs() { grep -H . /proc/irq/*/smp_affinity_list /proc/irq/default_smp_affinity 2>/dev/null || true; }
    kthreads_before=$(unbound_kthreads)
    irqs_before=$(irqs)
    # After rt-bench: no cgroup of its left, kernel threads and IRQs as they were.
    no_leftovers() {
        if ls -d /sys/fs/cgroup/*/slapos-edge-bench-* /sys/fs/cgroup/slapos-edge-bench-* >/dev/null 2>&1; then
            echo "rt-bench ($1) left cgroups behind" >&2
            exit 1
        fi
        kthreads_after=$(unbound_kthreads)
        if [ "$kthreads_before" != "$kthreads_after" ]; then
            echo "rt-bench ($1) left kernel threads steered:" >&2
            diff <(echo "$kthreads_before") <(echo "$kthreads_after") >&2 || true
            exit 1
        fi
        if [ "$irqs_before" != "$(irqs)" ]; then
            echo "rt-bench ($1) left IRQs steered:" >&2
            diff <(echo "$irqs_before") <(irqs) >&2 || true
            exit 1
        fi
    }
    out=$("$bin/rt-bench" --duration-s 0.5 --rounds 1 --warmup-s 0.3 --runs 2)
    for want in "median of 2 runs: ratios" "p99.9 (b)/(c) = " "(b) TTI misses / floor late wake-ups = "; do
        grep -qF "$want" <<<"$out" || { echo "rt-bench output lacks \"$want\":" >&2; echo "$out" >&2; exit 1; }
    done
    no_leftovers "smoke run"
    echo "rt-bench: smoke run (2 runs of 0.5 s per configuration) ok"

    # SIGTERM while its partitions are applied: it stops after the running slice, exit 1, says
    # so, and restores the host as a finished run does.
    err=$(mktemp)
    "$bin/rt-bench" --duration-s 2 --rounds 1 --warmup-s 0.3 >/dev/null 2>"$err" &
    pid=$!
    for _ in $(seq 1 100); do
        ls -d /sys/fs/cgroup/*/slapos-edge-bench-"$pid"-* >/dev/null 2>&1 && break
        sleep 0.1
    done
    ls -d /sys/fs/cgroup/*/slapos-edge-bench-"$pid"-* >/dev/null 2>&1 \
        || { echo "rt-bench applied no partition within 10 s:" >&2; cat "$err" >&2; exit 1; }
    kill -TERM "$pid"
    set +e
    wait "$pid"
    rc=$?
    set -e
    [ "$rc" = 1 ] || { echo "rt-bench stopped by SIGTERM: exit $rc, expected 1" >&2; cat "$err" >&2; exit 1; }
    grep -qF "stopped by signal 15" "$err" || { echo "rt-bench did not say it was stopped:" >&2; cat "$err" >&2; exit 1; }
    rm -f "$err"
    no_leftovers "stopped by SIGTERM"
    [ ! -e "${TMPDIR:-/tmp}/rt-bench-$pid" ] || { echo "rt-bench stopped by SIGTERM left ${TMPDIR:-/tmp}/rt-bench-$pid" >&2; exit 1; }
    echo "rt-bench: stopped by SIGTERM mid-run, host restored ok"
elif [ "${SLAPOS_REQUIRE_PRIVILEGED:-0}" = 1 ] || [ "${SLAPOS_REQUIRE_TOOLS:-0}" = 1 ]; then
    echo "rt-bench smoke run required but not root / tools missing / single CPU" >&2
    exit 1
else
    echo "rt-bench smoke run skipped (needs root, stress-ng, cyclictest, 2 CPUs)"
fi
