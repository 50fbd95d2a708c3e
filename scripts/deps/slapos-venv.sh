#!/usr/bin/env bash
# Python virtualenv with the real slapos.core 1.26.1 (and slapos.libnetworkcache, which
# `slapos proxy start` needs but slapos.core does not declare). Used by the xml_marshaller
# cross-check in proto/tests/ and by the SLAP compatibility tests. Idempotent.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$REPO/.venv/slapos"
SLAPOS_CORE_VERSION="1.26.1"

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "$@"
}

command -v python3 >/dev/null 2>&1 || apt_install python3

if [ ! -x "$VENV/bin/python" ]; then
    # Debian's python3 needs python3-venv (ensurepip) for `-m venv`.
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        apt_install python3-venv
        python3 -m venv "$VENV"
    fi
fi

if "$VENV/bin/python" - "$SLAPOS_CORE_VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("slapos.core") == sys.argv[1]
import slapos.libnetworkcache, xml_marshaller.xml_marshaller  # noqa: F401
PY
then
    echo "slapos venv ready: $VENV (slapos.core $SLAPOS_CORE_VERSION)"
    exit 0
fi

"$VENV/bin/pip" install --disable-pip-version-check --quiet \
    "slapos.core==$SLAPOS_CORE_VERSION" slapos.libnetworkcache
echo "slapos venv installed: $VENV (slapos.core $SLAPOS_CORE_VERSION)"
