#!/bin/sh
# flaky promise: fails when the instance was asked to be unhealthy (parameter healthy=false,
# written to etc/flaky.conf) or when the worker's heartbeat file is missing.
conf="$PARTITION_DIR/etc/flaky.conf"
heartbeat="$PARTITION_DIR/var/heartbeat"
if [ ! -f "$conf" ]; then
  echo "missing $conf"
  exit 1
fi
if grep -qx 'healthy=false' "$conf"; then
  echo "unhealthy on request (parameter healthy=false)"
  exit 1
fi
if [ ! -f "$heartbeat" ]; then
  echo "no heartbeat: $heartbeat is missing"
  exit 1
fi
echo "healthy, last heartbeat $(cat "$heartbeat")"
