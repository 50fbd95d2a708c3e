#!/usr/bin/env python3
"""Promise: exit 0 when URL answers 200 (and contains TEXT, if given), else exit 1."""
import sys
import urllib.request


def main():
    if len(sys.argv) not in (2, 3):
        print("usage: check_http.py URL [TEXT]", file=sys.stderr)
        return 2
    url = sys.argv[1]
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            body = r.read(65536).decode("utf-8", "replace")
            if r.status != 200:
                print(f"{url}: HTTP {r.status}")
                return 1
    except Exception as e:  # connection refused, timeout, HTTP error
        print(f"{url}: {e}")
        return 1
    if len(sys.argv) == 3 and sys.argv[2] not in body:
        print(f"{url}: answer does not contain {sys.argv[2]!r}")
        return 1
    print(f"{url}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
