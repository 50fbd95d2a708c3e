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
# One cargo invocation per package (a crate that fails to build does not hide the others).
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

# One cargo invocation per package: a crate that does not build for a target does not hide the
# results of the others. Summary at the end; exit 1 if any failed.
export SLAPOS_EMULATED=1
summary=()
status=0
for t in "${targets[@]}"; do
    for p in "${packages[@]}"; do
        t0=$(date +%s.%N)
        cross_log "$t: cargo test -p $p ${extra[*]} (qemu-user)"
        if SLAPOS_EMULATED_TARGET=$t "${CROSS_CARGO[@]}" test --target "$t" --no-fail-fast -p "$p" "${extra[@]}"; then
            result=ok
        else
            result=FAILED
            status=1
        fi
        summary+=("$(printf '%-31s %-14s %-7s %6.1fs' "$t" "$p" "$result" \
            "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')")")
    done
done
echo "emulated unit tests (${extra[*]}), build + run time per package:"
printf '%s\n' "${summary[@]}"
exit $status
