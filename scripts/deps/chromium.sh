#!/usr/bin/env bash
# Headless Chromium from Debian for the web console's browser tests (tests/tests/console.rs):
# the test loads the master's console with `chromium --headless --dump-dom` and takes a
# screenshot. Idempotent: installs only when missing. Needs root for apt-get.
set -euo pipefail
# DejaVu: text in the screenshots (chromium only recommends fonts).
if command -v chromium >/dev/null 2>&1 \
    && dpkg-query -W -f='${Status}' fonts-dejavu-core 2>/dev/null | grep -q "install ok installed"; then
    echo "chromium present"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "chromium missing and not root: skipping install" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null || {
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null
}
echo "chromium installed: $(chromium --version)"
