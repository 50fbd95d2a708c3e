#!/usr/bin/env python3
"""Promise of the master instance: GET URL/v1/health answers over mTLS (exit 0), else exit 1.

Usage: check_health.py URL CREDS. CREDS holds ca.pem (the master's CA, the only root trusted),
monitor.pem and monitor.key (a plain user certificate: over mTLS a caller without a certificate
may only enroll).
"""
import json
import os
import ssl
import sys
import urllib.request

if len(sys.argv) != 3:
    sys.exit("usage: check_health.py URL CREDS")
health = sys.argv[1].rstrip("/") + "/v1/health"
creds = sys.argv[2]
try:
    ctx = ssl.create_default_context(cafile=os.path.join(creds, "ca.pem"))
    ctx.load_cert_chain(os.path.join(creds, "monitor.pem"), os.path.join(creds, "monitor.key"))
    with urllib.request.urlopen(health, timeout=3, context=ctx) as r:
        body = json.loads(r.read(65536))
    print(f"master healthy: protocol {body['protocol']}, version {body['version']}")
except Exception as e:  # refused, TLS failure, timeout, HTTP error, not the health JSON
    print(f"master not healthy at {health}: {e!r}")
    sys.exit(1)
