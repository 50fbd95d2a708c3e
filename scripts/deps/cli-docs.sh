#!/usr/bin/env bash
# master-lite's tests/cli.rs reads every man page scripts/gen-cli-docs.sh writes with groff
# (groff-base). Idempotent: installs only what is missing.
set -euo pipefail
command -v groff >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "cli-docs: groff missing and this is not root; install groff-base (the man page check skips)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends groff-base >/dev/null \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends groff-base >/dev/null; }
