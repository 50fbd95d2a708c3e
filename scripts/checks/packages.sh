#!/usr/bin/env bash
# CI check of the release packages (docs/install.md):
#  1. the cross artefacts: cross/build.sh with the settings of scripts/checks/cross.sh
#     (cross_ci_defaults: the master for x86_64 only), which
#     runs before this check (alphabetical order), so these are cargo no-ops in CI;
#  2. scripts/package.sh: the tarballs, the .debs (amd64, arm64, armhf), SHA256SUMS, MANIFEST.tsv;
#  3. verification: sha256sum -c of SHA256SUMS and of each tarball's own SHA256SUMS; each .deb's
#     control fields and contents; every packaged binary of the ARM packages runs (--version)
#     under qemu-user; lintian (errors and warnings fail, except the overrides shipped and
#     explained in docs/install.md);
#  4. the arm64 .deb's node booted on the QEMU aarch64 board (SLAPOS_BOARD_NODE);
#  5. dist/test-install.sh: the amd64 .debs installed, run under systemd and purged in a clean
#     Debian 12 (systemd-nspawn).
set -euo pipefail
cd "$(dirname "$0")/../.."
. cross/lib.sh
# The same artefacts as scripts/checks/cross.sh: no slapos-master .deb for arm64/armhf in CI.
cross_ci_defaults
t0=$(date +%s)
step() { echo "packages check: [$(( $(date +%s) - t0 ))s] $*"; }
TD=$(cross_target_dir)
out=$TD/dist

step "cross/build.sh (no-op after scripts/checks/cross.sh)"
cross/build.sh --no-init --no-report >/dev/null
step "scripts/package.sh"
scripts/package.sh --out "$out"
ls -l "$out"

step "verify: SHA256SUMS, tarballs"
(cd "$out" && sha256sum -c --quiet SHA256SUMS)
x=$(mktemp -d)
trap 'rm -rf "$x"' EXIT
for tgz in "$out"/slapos-edge-*.tar.gz; do
    tar -C "$x" -xzf "$tgz"
    d=$x/$(basename "$tgz" .tar.gz)
    (cd "$d" && sha256sum -c --quiet SHA256SUMS) || { echo "packages check: $tgz: its SHA256SUMS does not verify" >&2; exit 1; }
    t=$(basename "$tgz" .tar.gz | sed 's/^slapos-edge-[^-]*-//')
    for b in slapos-master slapos-node slapos-buffer; do
        [ $b != slapos-master ] || cross_package_wanted master-lite "$t" || continue
        [ -x "$d/bin/$b" ] || { echo "packages check: $tgz has no bin/$b" >&2; exit 1; }
    done
done

step "verify: .deb fields, contents, ARM binaries under qemu-user"
qemu_for() {
    case "$1" in
        amd64) echo "" ;;
        arm64) echo "qemu-aarch64-static" ;;
        armhf) echo "qemu-arm-static -L /usr/arm-linux-gnueabihf" ;;
    esac
}
for deb in "$out"/*.deb; do
    name=$(basename "$deb" .deb)
    IFS=_ read -r pkg version arch <<<"$name"
    [ "$(dpkg-deb -f "$deb" Package)" = "$pkg" ] && [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] &&
        [ "$(dpkg-deb -f "$deb" Version)" = "$version" ] ||
        { echo "packages check: $deb: control fields do not match its name" >&2; dpkg-deb --info "$deb" >&2; exit 1; }
    contents=$(dpkg-deb --contents "$deb")
    grep -q " ./usr/bin/$pkg$" <<<"$contents" ||
        { echo "packages check: $deb has no /usr/bin/$pkg" >&2; exit 1; }
    rm -rf "$x/deb" && dpkg-deb -x "$deb" "$x/deb"
    for b in "$x"/deb/usr/bin/*; do
        # shellcheck disable=SC2046
        v=$($(qemu_for "$arch") "$b" --version 2>&1) ||
            { echo "packages check: $deb: ${b##*/} --version failed: $v" >&2; exit 1; }
        echo "  $arch ${b##*/}: $v"
    done
    # The master's SQLite (C, cross-compiled) and CA code, for real: a new database and a token.
    if [ "$pkg" = slapos-master ]; then
        rm -f "$x/m.db"*
        # shellcheck disable=SC2046
        v=$($(qemu_for "$arch") "$x/deb/usr/bin/slapos-master" token create --computer COMP-1 \
            --db "$x/m.db" --create-db 2>&1) ||
            { echo "packages check: $deb: slapos-master token create on a new database failed: $v" >&2; exit 1; }
        echo "  $arch slapos-master token create --create-db: ok (SQLite)"
    fi
done

step "lintian"
if command -v lintian >/dev/null; then
    lintian --fail-on error,warning --tag-display-limit 0 "$out"/*.deb
elif [ "${SLAPOS_REQUIRE_TOOLS:-0}" = 1 ]; then
    echo "packages check: FAIL: lintian not found (scripts/deps/packages.sh; SLAPOS_REQUIRE_TOOLS=1 forbids skipping)" >&2
    exit 1
else
    echo "packages check: SKIP lintian: not found (scripts/deps/packages.sh; set SLAPOS_REQUIRE_TOOLS=1 to make this a failure)"
fi

# The arm64 package on the board: the QEMU aarch64 board (no dpkg, no systemd: an initramfs)
# boots the node the .deb ships, which registers with a host master and starts an instance
# (tests/tests/boards.rs; gated like every board test, SLAPOS_REQUIRE_QEMU=1 in CI).
step "the arm64 .deb's slapos-node on the QEMU aarch64 board"
rm -rf "$x/board" && dpkg-deb -x "$(ls "$out"/slapos-node_*_arm64.deb)" "$x/board"
SLAPOS_BOARD_NODE="$x/board/usr/bin/slapos-node" cargo test -q -p slapos-tests --test boards \
    qemu_virt_aarch64_node_registers_and_starts_an_instance -- --exact --nocapture 2>&1 | tail -15

step "dist/test-install.sh"
dist/test-install.sh "$out"
step "ok"
