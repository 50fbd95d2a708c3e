#!/usr/bin/env bash
# Cross builds, qemu-user test runs and QEMU board boots (docs/cross.md). Idempotent; run as root.
#   - Debian cross gcc + sysroots (glibc targets link with them; ring-style C code on musl too)
#   - qemu-user-static (cargo runner of cross/test-emulated.sh)
#   - qemu-system-arm (aarch64 + arm boards), preferring bookworm-backports (QEMU 10, boots ~1.5x
#     faster than 7.2 and does not remove a backports qemu-utils) through a private apt state, so
#     /etc/apt is left alone
#   - the rustup targets listed in rust-toolchain.toml
#   - the board kernels (boards/fetch-kernels.sh, cached under target/boards-cache)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
. "$REPO/cross/lib.sh"
export DEBIAN_FRONTEND=noninteractive
APT_LOCK=(-o DPkg::Lock::Timeout=300)

# Cross gcc + sysroots and qemu-user for every ARM target; binutils for readelf. Not root: say
# what is missing and go on (the board and emulated tests then skip with a reason).
cross_ensure_apt binutils $(for t in "${CROSS_DEFAULT_TARGETS[@]}"; do cross_apt_packages "$t" run; done | tr ' ' '\n' | sort -u) ||
    echo "cross deps: continuing without them" >&2

if [ "$(id -u)" != 0 ]; then
    command -v qemu-system-aarch64 >/dev/null || echo "cross deps: qemu-system-arm missing and not root" >&2
elif ! command -v qemu-system-aarch64 >/dev/null || ! command -v qemu-system-arm >/dev/null; then
    BPO=/var/cache/slapos-cross/apt-bpo
    mkdir -p "$BPO/lists/partial" "$BPO/archives/partial"
    printf '%s\n' \
        'deb http://deb.debian.org/debian bookworm main' \
        'deb http://deb.debian.org/debian bookworm-updates main' \
        'deb http://deb.debian.org/debian-security bookworm-security main' \
        'deb http://deb.debian.org/debian bookworm-backports main' >"$BPO/sources.list"
    APTOPT=(-o "Dir::Etc::sourcelist=$BPO/sources.list" -o Dir::Etc::sourceparts=- \
            -o "Dir::State::lists=$BPO/lists" -o "Dir::Cache::archives=$BPO/archives" \
            -o APT::Architectures::=amd64 -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
    if apt-get "${APTOPT[@]}" update -qq &&
       apt-get "${APT_LOCK[@]}" "${APTOPT[@]}" install -y --no-install-recommends \
           qemu-system-arm/bookworm-backports qemu-system-common/bookworm-backports \
           qemu-system-data/bookworm-backports qemu-utils/bookworm-backports; then
        echo "cross deps: qemu-system-arm from bookworm-backports"
    else
        echo "cross deps: bookworm-backports unavailable, installing bookworm's qemu-system-arm"
        apt-get "${APT_LOCK[@]}" install -y --no-install-recommends qemu-system-arm
    fi
fi

# rustup targets of rust-toolchain.toml (a no-op when present).
mapfile -t targets < <(sed -n '/^targets/,/]/p' "$REPO/rust-toolchain.toml" | grep -o '"[^"]*"' | tr -d '"')
cross_ensure_targets "${targets[@]}"

# Board kernels (downloaded once, cached).
"$REPO/boards/fetch-kernels.sh"
echo "cross deps ready"
