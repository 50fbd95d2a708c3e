#!/bin/sh
# flaky worker: touches a heartbeat file every second. With CRASH=true it exits at once
# (to watch the node restart it with backoff).
heartbeat="$1"
[ -n "$heartbeat" ] || { echo "usage: flaky.sh HEARTBEAT_FILE" >&2; exit 2; }
if [ "$CRASH" = true ]; then
  echo "crashing on purpose (parameter crash=true)" >&2
  exit 1
fi
echo "worker up, heartbeat in $heartbeat"
trap 'echo "worker stopping"; rm -f "$heartbeat"; exit 0' TERM INT
while :; do
  date +%s > "$heartbeat"
  sleep 1 &
  wait $!
done
