#!/usr/bin/env bash
# Tools for the rt crate: `stress-ng` and `cyclictest` (rt-tests) for rt-bench, `unshare`/`mount`
# (util-linux/mount, essential on Debian) for the cgroup2 namespace test. Idempotent: installs
# only what is missing. Needs root for apt-get.
set -euo pipefail

missing=()
command -v stress-ng >/dev/null 2>&1 || missing+=(stress-ng)
command -v cyclictest >/dev/null 2>&1 || missing+=(rt-tests)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v mount >/dev/null 2>&1 || missing+=(mount)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "rt deps present: stress-ng, cyclictest, unshare, mount"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "rt deps missing (${missing[*]}) and not root: skipping install" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends "${missing[@]}"
