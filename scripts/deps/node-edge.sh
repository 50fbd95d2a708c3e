#!/usr/bin/env bash
# node-edge tests run real processes: sh (always there), python3 (the hello-web example's
# service and promise, the network test's service), and for the root-mode tests
# (tests/isolation.rs, tests/network.rs): useradd/userdel (passwd), runuser (util-linux),
# ip (iproute2) and curl. Idempotent: installs only what is missing.
set -euo pipefail
need=()
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v useradd >/dev/null 2>&1 || [ -x /usr/sbin/useradd ] || need+=(passwd)
command -v runuser >/dev/null 2>&1 || [ -x /usr/sbin/runuser ] || need+=(util-linux)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need+=(iproute2)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "node-edge: missing ${need[*]} and this is not root; install them (the tests needing them skip)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends "${need[@]}" || { apt-get update && apt-get install -y --no-install-recommends "${need[@]}"; }
