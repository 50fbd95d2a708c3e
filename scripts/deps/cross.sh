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
export DEBIAN_FRONTEND=noninteractive
APT_LOCK=(-o DPkg::Lock::Timeout=300)

missing=()
for p in gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross \
         qemu-user-static binutils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "cross deps: apt-get install ${missing[*]}"
    apt-get "${APT_LOCK[@]}" install -y --no-install-recommends "${missing[@]}"
fi

if ! command -v qemu-system-aarch64 >/dev/null || ! command -v qemu-system-arm >/dev/null; then
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
if command -v rustup >/dev/null; then
    mapfile -t targets < <(sed -n '/^targets/,/]/p' "$REPO/rust-toolchain.toml" | grep -o '"[^"]*"' | tr -d '"')
    (cd "$REPO" && rustup target add "${targets[@]}" >/dev/null)
fi

# Board kernels (downloaded once, cached).
"$REPO/boards/fetch-kernels.sh"
echo "cross deps ready"
