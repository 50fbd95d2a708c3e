#!/usr/bin/env python3
"""Promise: exit 0 when the master at URL answers GET /v1/health over mTLS, else exit 1.

CREDS holds ca.pem (the master's CA: the only root trusted), monitor.pem and monitor.key (a
plain user certificate: over mTLS a caller without a certificate may only enroll).
"""
import json
import os
import ssl
import sys
import urllib.request


def main():
    if len(sys.argv) != 3:
        print("usage: check_health.py URL CREDS", file=sys.stderr)
        return 2
    url, creds = sys.argv[1], sys.argv[2]
    health = url.rstrip("/") + "/v1/health"
    try:
        ctx = ssl.create_default_context(cafile=os.path.join(creds, "ca.pem"))
        ctx.load_cert_chain(os.path.join(creds, "monitor.pem"), os.path.join(creds, "monitor.key"))
        with urllib.request.urlopen(health, timeout=3, context=ctx) as r:
            body = json.loads(r.read(65536))
    except Exception as e:  # refused, TLS failure, timeout, HTTP error, not JSON
        print(f"{health}: {e}")
        return 1
    print(f"{health}: ok, protocol {body.get('protocol')}, version {body.get('version')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
