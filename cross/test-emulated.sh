#!/usr/bin/env bash
# Unit tests of the node-side crates, cross-compiled and run under qemu-user (the cargo runner of
# cross/config.toml: qemu-aarch64-static / qemu-arm-static; binfmt_misc is not needed).
#
#   cross/test-emulated.sh [TARGET...]     default: aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf
#
# Crates: slapos-proto slapos-client rt radio buffer node-edge (SLAPOS_EMULATED_PACKAGES overrides).
# By default the unit tests (`--lib --bins`): integration tests that spawn the crate's own binary
# cannot run under qemu-user without binfmt_misc (the child is an aarch64/arm ELF: ENOEXEC), and
# proptest-heavy suites run ~10x slower. `cross/test-emulated.sh -- --tests` (or any cargo test
# arguments after `--`) replaces the default selection; doctests: `-- --doc`.
# One cargo invocation for all crates; if that does not compile, one per crate (a crate that does
# not build does not hide the others' results).
# Sets SLAPOS_EMULATED=1 (and SLAPOS_EMULATED_TARGET=<triple>): a test that needs something
# qemu-user does not emulate (termios2 ioctls, netlink/cgroup/namespace behaviour of the host
# kernel seen through a foreign ABI, executing another target binary without binfmt_misc) must
# skip with a reason when it sees SLAPOS_EMULATED=1. Extra arguments for cargo test can be given
# after `--` (e.g. `-- --lib`). Installs what it needs when run as root (cross/lib.sh).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CROSS_REPO"

targets=() extra=(--lib --bins)
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; extra=("$@"); break ;;
        -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
packages=(${SLAPOS_EMULATED_PACKAGES:-slapos-proto slapos-client rt radio buffer node-edge})
cross_ensure run "${targets[@]}"

# Fast path: one `cargo test` for all packages (shared dependencies compile once). If that does
# not compile, one invocation per package, so a crate that does not build for a target does not
# hide the results of the others. Exit 1 if anything failed.
export SLAPOS_EMULATED=1
pkg_args=()
for p in "${packages[@]}"; do pkg_args+=(-p "$p"); done
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
summary=()
status=0
for t in "${targets[@]}"; do
    export SLAPOS_EMULATED_TARGET=$t
    t0=$(date +%s.%N)
    cross_log "$t: cargo test ${pkg_args[*]} ${extra[*]} (qemu-user)"
    if "${CROSS_CARGO[@]}" test --target "$t" --no-run "${pkg_args[@]}" "${extra[@]}"; then
        if "${CROSS_CARGO[@]}" test --target "$t" --no-fail-fast "${pkg_args[@]}" "${extra[@]}"; then
            result=ok
        else
            result=FAILED status=1
        fi
        summary+=("$(printf '%-31s %-40s %-7s %6ss' "$t" "${packages[*]}" "$result" "$(since "$t0")")")
        continue
    fi
    cross_log "$t: a package does not build; testing one package at a time"
    for p in "${packages[@]}"; do
        t0=$(date +%s.%N)
        cross_log "$t: cargo test -p $p ${extra[*]} (qemu-user)"
        if "${CROSS_CARGO[@]}" test --target "$t" --no-fail-fast -p "$p" "${extra[@]}"; then
            result=ok
        else
            result=FAILED status=1
        fi
        summary+=("$(printf '%-31s %-40s %-7s %6ss' "$t" "$p" "$result" "$(since "$t0")")")
    done
done
echo "emulated unit tests (${extra[*]}), build + run time:"
printf '%s\n' "${summary[@]}"
exit $status
