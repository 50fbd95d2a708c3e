#!/usr/bin/env bash
# Download and unpack the Debian 12 kernels the QEMU boards boot (boards/*/board.toml `kernel`),
# and the bookworm-backports arm64 kernel (6.12: remote cpuset partitions) the rt cgroup v2 board
# test boots.
# Uses a private apt state (own sources list, lists and architectures), so dpkg's architecture
# list and /etc/apt stay untouched and no root is needed. Idempotent: a kernel already unpacked
# in the cache is kept.
#
#   boards/fetch-kernels.sh [CACHE_DIR]
#     CACHE_DIR defaults to $SLAPOS_BOARDS_CACHE, else <workspace target dir>/boards-cache.
# Result: CACHE_DIR/kernels/<meta>_<arch>/{vmlinuz,modules/} with a `version` file, e.g.
#   kernels/linux-image-arm64_arm64/vmlinuz  kernels/linux-image-arm64_arm64/modules/kernel/...
# An entry is meta[@suite]:arch; the suite defaults to bookworm (main), another one is cached
# under its own name: linux-image-arm64@bookworm-backports:arm64 ->
#   kernels/linux-image-arm64@bookworm-backports_arm64/
# Compressed modules (.ko.xz, backports kernels) are unpacked to plain .ko.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${1:-${SLAPOS_BOARDS_CACHE:-${CARGO_TARGET_DIR:-$REPO/target}/boards-cache}}"
# meta-package[@suite]:arch; the boards name these in their `kernel.package`.
KERNELS=(${SLAPOS_BOARD_KERNELS:-linux-image-arm64:arm64 linux-image-armmp:armhf linux-image-arm64@bookworm-backports:arm64})

need=()
for k in "${KERNELS[@]}"; do
    [ -s "$CACHE/kernels/${k/:/_}/vmlinuz" ] || need+=("$k")
done
[ ${#need[@]} -eq 0 ] && { echo "kernels cached in $CACHE/kernels"; exit 0; }

APTD="$CACHE/apt"
mkdir -p "$APTD/archives/partial" "$APTD/debs" "$CACHE/kernels"
archs=$(printf '%s\n' "${need[@]}" | cut -d: -f2 | sort -u | paste -sd,)
# One private apt state per suite (bookworm: $APTD/lists, another suite: $APTD/<suite>/lists),
# each with only that suite's sources, so the meta package resolves to that suite's kernel.
apt_for() {
    local suite=$1 dir=$APTD
    [ "$suite" = bookworm ] || dir=$APTD/$suite
    mkdir -p "$dir/lists/partial"
    echo "deb http://deb.debian.org/debian $suite main" >"$dir/sources.list"
    APTOPT=(-o "Dir::Etc::sourcelist=$dir/sources.list" -o Dir::Etc::sourceparts=-
            -o "Dir::State::lists=$dir/lists" -o "Dir::Cache::archives=$APTD/archives"
            -o "Dir::State::status=/dev/null" -o "APT::Architectures=$archs"
            -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o Debug::NoLocking=1
            -o APT::Sandbox::User=root)
    apt-get "${APTOPT[@]}" update -qq
}

for k in "${need[@]}"; do
    spec=${k%:*} arch=${k#*:}
    meta=${spec%@*} suite=bookworm
    [ "$spec" = "$meta" ] || suite=${spec#*@}
    apt_for "$suite"
    # linux-image-arm64 -> linux-image-6.1.0-NN-arm64 (the versioned image package).
    pkg=$(apt-cache "${APTOPT[@]}" depends "$meta:$arch" |
          awk '/Depends: linux-image-[0-9]/{print $2; exit}' | sed "s/:$arch\$//")
    [ -n "$pkg" ] || { echo "fetch-kernels: cannot resolve $meta:$arch in $suite" >&2; exit 1; }
    (cd "$APTD/debs" && apt-get "${APTOPT[@]}" download "$pkg:$arch" >/dev/null)
    deb=$(ls -t "$APTD/debs/${pkg}_"*"_$arch.deb" | head -1)
    out="$CACHE/kernels/${spec}_$arch"
    tmp=$(mktemp -d "$CACHE/kernels/.x.XXXXXX")
    dpkg-deb -x "$deb" "$tmp/x"
    mkdir -p "$tmp/k"
    cp "$tmp"/x/boot/vmlinuz-* "$tmp/k/vmlinuz"
    # lib/modules (bookworm) or usr/lib/modules (merged-/usr packages).
    for d in "$tmp"/x/lib/modules/* "$tmp"/x/usr/lib/modules/*; do
        [ -d "$d" ] && { mv "$d" "$tmp/k/modules"; break; }
    done
    find "$tmp/k/modules" -name '*.ko.xz' -exec xz -d {} +
    # Device trees (raspberry-pi boards), when the package ships them.
    [ -d "$tmp/x/usr/lib/$pkg" ] && mv "$tmp/x/usr/lib/$pkg" "$tmp/k/dtbs"
    basename "$deb" >"$tmp/k/version"
    rm -rf "$out" && mv "$tmp/k" "$out" && rm -rf "$tmp"
    rm -f "$deb"
    echo "kernel $meta:$arch ($suite) -> $out ($(cat "$out/version"))"
done
