#!/usr/bin/env bash
# node-edge tests run real processes: sh (always there) and python3 (the hello-web example's
# service and promise). Idempotent: installs python3 only when it is missing.
set -euo pipefail
if command -v python3 >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "node-edge: python3 is missing and this is not root; install python3 (the hello-web tests skip without it)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends python3 || { apt-get update && apt-get install -y --no-install-recommends python3; }
