#!/usr/bin/env bash
# Packaging and the install test (scripts/package.sh, dist/test-install.sh, docs/install.md):
#   - lintian: checks the .debs
#   - debootstrap: the clean Debian 12 rootfs the .debs are installed in
#   - systemd-container: systemd-nspawn boots it with systemd
#   - binutils: objdump (the glibc floor of the armhf binaries)
# dpkg-deb comes with dpkg. Idempotent; needs root to install (otherwise says what is missing and
# the install test skips with a reason).
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/cross/lib.sh"
cross_ensure_apt lintian debootstrap systemd-container binutils ||
    echo "packages deps: continuing without them" >&2
echo "packages deps ready"
