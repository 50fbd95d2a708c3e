#!/usr/bin/env bash
# Coverage-guided fuzzing of the fuzz/ targets (issue #19; fuzz/README.md).
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]   fuzz each target SECONDS (default 600), print the
#                                            executions per target and the crashes found
#   scripts/fuzz.sh --replay [TARGET|all]    run the committed corpus and regressions once
#   scripts/fuzz.sh --cmin [TARGET|all]      minimise the committed corpus and what the runs
#                                            found into fuzz/corpus/ (same edge coverage)
#   scripts/fuzz.sh --list                   the targets
#
# Environment: FUZZ_JOBS targets at once (default 1), FUZZ_RSS_MB (2048) and FUZZ_TIMEOUT
# (seconds per input, 10) passed to libFuzzer as -rss_limit_mb / -timeout, FUZZ_TARGET_DIR
# (cargo target dir, default fuzz/target), FUZZ_SKIP_BUILD=1 to use the binaries as built.
#
# Built with `cargo fuzz build --sanitizer none` (release, with debug assertions and overflow
# checks): the stable toolchain has no AddressSanitizer (a `-Z` flag), but SanitizerCoverage,
# libFuzzer and debug assertions work on stable. A run
# grows fuzz/target/corpus/<target> (not committed); crashes land in fuzz/artifacts/<target>/.
# The committed seeds (fuzz/corpus/<target>) and regressions (fuzz/regressions/<target>) are
# read-only inputs of every run.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$REPO/fuzz"
TARGET_DIR="${FUZZ_TARGET_DIR:-$FUZZ/target}"
BIN="$TARGET_DIR/x86_64-unknown-linux-gnu/release"
JOBS="${FUZZ_JOBS:-1}"
RSS_MB="${FUZZ_RSS_MB:-2048}"
TIMEOUT="${FUZZ_TIMEOUT:-10}"

targets() { sed -n 's/^name = "\([a-z_]*\)"$/\1/p' "$FUZZ/Cargo.toml" | grep -vx slapos-edge-fuzz; }

pick() {
    if [ -z "${1:-}" ] || [ "$1" = all ]; then
        targets
    elif targets | grep -qx "$1"; then
        echo "$1"
    else
        echo "fuzz: unknown target '$1' (scripts/fuzz.sh --list)" >&2
        exit 2
    fi
}

build() {
    [ "${FUZZ_SKIP_BUILD:-0}" = 1 ] && return
    local t0=$SECONDS
    (cd "$FUZZ" && cargo fuzz build --sanitizer none --codegen-units 16 \
        --target-dir "$TARGET_DIR" "$@")
    echo "fuzz: built in $((SECONDS - t0))s"
}

# Inputs of a target that must pass: the committed corpus and the fixed regressions
# (fuzz/regressions/<t>/known/ holds crashes of bugs not fixed yet: replayed by --replay with
# SLAPOS_FUZZ_STRICT=1, reported, not failing).
seeds() {
    local t=$1 d
    for d in "$FUZZ/corpus/$t" "$FUZZ/regressions/$t"; do
        [ -d "$d" ] && find "$d" -maxdepth 1 -type f
    done
    return 0
}

replay() {
    local t=$1 status=0 n known
    mapfile -t files < <(seeds "$t")
    n=${#files[@]}
    if [ "$n" -gt 0 ]; then
        # libFuzzer runs each file given as an argument once.
        if ! "$BIN/$t" -rss_limit_mb="$RSS_MB" -timeout="$TIMEOUT" "${files[@]}" \
            >"$TARGET_DIR/replay-$t.log" 2>&1; then
            echo "fuzz: $t: replay FAILED (log: $TARGET_DIR/replay-$t.log)" >&2
            tail -30 "$TARGET_DIR/replay-$t.log" >&2
            status=1
        fi
    fi
    known=0
    if [ -d "$FUZZ/regressions/$t/known" ]; then
        for f in "$FUZZ/regressions/$t/known"/*; do
            [ -f "$f" ] || continue
            known=$((known + 1))
            if SLAPOS_FUZZ_STRICT=1 "$BIN/$t" -rss_limit_mb="$RSS_MB" -timeout="$TIMEOUT" "$f" \
                >/dev/null 2>&1; then
                echo "fuzz: $t: known bug $(basename "$f") no longer crashes: move it to fuzz/regressions/$t/"
            else
                echo "fuzz: $t: known bug $(basename "$f") still crashes (see fuzz/README.md)"
            fi
        done
    fi
    printf 'fuzz: %-16s replayed %4d inputs%s: %s\n' "$t" "$n" \
        "$([ "$known" -gt 0 ] && echo " (+$known known bugs)")" "$([ $status = 0 ] && echo ok || echo FAILED)"
    return $status
}

run() {
    local t=$1 secs=$2 work="$TARGET_DIR/corpus/$t" art="$FUZZ/artifacts/$t" log rc runs
    mkdir -p "$work" "$art"
    log="$TARGET_DIR/fuzz-$t.log"
    local dirs=("$work")
    for d in "$FUZZ/corpus/$t" "$FUZZ/regressions/$t"; do [ -d "$d" ] && dirs+=("$d"); done
    set +e
    "$BIN/$t" "${dirs[@]}" -max_total_time="$secs" -rss_limit_mb="$RSS_MB" -timeout="$TIMEOUT" \
        -artifact_prefix="$art/" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    [ -n "$runs" ] || runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
    local crashes
    crashes=$(find "$art" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
    local corpus
    corpus=$(sed -n 's/.*corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' "$log" | tail -1)
    printf 'fuzz: %-16s %5ss %10s runs %7s exec/s  corpus %-10s %s\n' "$t" "$secs" "${runs:-?}" \
        "$(( ${runs:-0} / (secs > 0 ? secs : 1) ))" "${corpus:-?}" \
        "$([ "$rc" = 0 ] && echo "ok" || echo "CRASH (exit $rc, $crashes file(s) in fuzz/artifacts/$t; log $log)")"
    [ "$rc" = 0 ] || { grep -m1 -A12 -E "panicked|ERROR: libFuzzer|==[0-9]+== ERROR" "$log" >&2 || tail -20 "$log" >&2; }
    return "$rc"
}

cmin() {
    local t=$1 work="$TARGET_DIR/corpus/$t" new="$FUZZ/corpus/$t.new"
    rm -rf "$new"
    mkdir -p "$new" "$work"
    local dirs=()
    for d in "$FUZZ/corpus/$t" "$work"; do [ -d "$d" ] && dirs+=("$d"); done
    # Set-cover merge on edges only (no hit counters): the same edge coverage as a full merge
    # in about a tenth of the files, so the committed corpus stays small.
    "$BIN/$t" -merge=1 -set_cover_merge=1 -use_counters=0 -rss_limit_mb="$RSS_MB" \
        -timeout="$TIMEOUT" "$new" "${dirs[@]}" \
        >"$TARGET_DIR/cmin-$t.log" 2>&1
    rm -rf "$FUZZ/corpus/$t"
    mv "$new" "$FUZZ/corpus/$t"
    printf 'fuzz: %-16s corpus minimised to %s files, %s bytes\n' "$t" \
        "$(find "$FUZZ/corpus/$t" -type f | wc -l)" "$(du -sb "$FUZZ/corpus/$t" | cut -f1)"
}

mode=run
case "${1:-}" in
    --list) targets; exit 0 ;;
    --replay) mode=replay; shift ;;
    --cmin) mode=cmin; shift ;;
esac
mapfile -t list < <(pick "${1:-all}")
secs="${2:-600}"
mkdir -p "$TARGET_DIR"
build
status=0
case $mode in
    replay) for t in "${list[@]}"; do replay "$t" || status=1; done ;;
    cmin) for t in "${list[@]}"; do cmin "$t"; done ;;
    run)
        t0=$SECONDS
        for t in "${list[@]}"; do
            rm -f "$TARGET_DIR/rc-$t"
            (if run "$t" "$secs"; then rc=0; else rc=1; fi; echo "$rc" >"$TARGET_DIR/rc-$t") &
            while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
        done
        wait
        for t in "${list[@]}"; do
            [ "$(cat "$TARGET_DIR/rc-$t" 2>/dev/null)" = 0 ] || status=1
        done
        echo "fuzz: ${#list[@]} target(s), ${secs}s each, $JOBS at a time: $((SECONDS - t0))s," \
            "$([ $status = 0 ] && echo "no crash" || echo "CRASHES FOUND")"
        ;;
esac
exit $status
