#!/usr/bin/env python3
"""Promise of sensor-gateway: the buffer's /health answers 200 (503 means degraded: disk full,
I/O errors, or the `block` policy holding back sensors)."""
import sys
import urllib.error
import urllib.request

url = sys.argv[1]
try:
    with urllib.request.urlopen(url, timeout=4) as r:
        body = r.read(4096).decode("utf-8", "replace").strip()
        print(f"buffer healthy: {body[:200]}")
except urllib.error.HTTPError as e:
    print(f"buffer degraded: {url} answered {e.code}: {e.read(512).decode('utf-8', 'replace')}")
    sys.exit(1)
except OSError as e:
    print(f"buffer not answering at {url}: {e}")
    sys.exit(1)
