#!/usr/bin/env bash
# Test dependencies of the `buffer` crate: mosquitto (local and upstream MQTT brokers started
# by the tests on free loopback ports, plain and with TLS), socat (serial pty pairs) and
# openssl (the certificates of buffer-bench's TLS figures; the tests make theirs with rcgen).
# Idempotent.
set -euo pipefail
need=()
for pkg in mosquitto socat openssl; do
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
echo "buffer deps: mosquitto, socat and openssl present"
