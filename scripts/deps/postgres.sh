#!/usr/bin/env bash
# Test dependency of master-lite's fleet tests (issue 13): PostgreSQL from Debian (15 on
# bookworm). The tests start their own throw-away server (initdb into a temp dir as the
# unprivileged `postgres` user, a free loopback port, stopped at the end: master_lite::testpg),
# so the packaged cluster service is not needed and is left stopped. Idempotent.
set -euo pipefail
need=()
for pkg in postgresql; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        need+=("$pkg")
    fi
done
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${need[@]}" || {
        apt-get update
        apt-get install -y --no-install-recommends "${need[@]}"
    }
fi
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ] || [ ! -x "$bin/postgres" ]; then
    echo "postgres deps: initdb/postgres not found under /usr/lib/postgresql/*/bin" >&2
    exit 1
fi
echo "postgres deps: $("$bin/postgres" --version) in $bin"
