#!/usr/bin/env python3
"""shared-proxy: one HTTP server for every shared instance its host serves.

`proxy.py serve --bind ADDR --port N --routes FILE` answers GET /<slave_reference>/ with a
page made from that shared instance's parameters (`title`, `message`), GET /healthz with "ok",
anything else with 404. FILE is the host's `slave_instance_list` as JSON, re-read on every
request, so a re-rendered list takes effect without a restart and a detached shared instance
answers 404 at once. `proxy.py check URL` is the promise: exit 0 when URL answers 200.
Only the Python standard library is used.
"""
import argparse
import html
import http.server
import json
import signal
import socket
import sys
import urllib.parse
import urllib.request


def load_routes(path):
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError):
        return {}
    return {e["slave_reference"]: e for e in entries if isinstance(e, dict) and "slave_reference" in e}


class Handler(http.server.BaseHTTPRequestHandler):
    routes_file = ""

    def answer(self, status, body, kind="text/html; charset=utf-8"):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/healthz":
            return self.answer(200, "ok\n", "text/plain")
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        entry = load_routes(self.routes_file).get(urllib.parse.unquote(parts[0]))
        if entry is None:
            return self.answer(404, "no shared instance here\n", "text/plain")
        title = html.escape(str(entry.get("title", entry["slave_reference"])))
        message = html.escape(str(entry.get("message", "")))
        ref = html.escape(entry["slave_reference"])
        self.answer(200, f"<!doctype html>\n<h1>{title}</h1>\n<p>{message}</p>\n"
                         f"<p><small>shared instance {ref}</small></p>\n")


class Server(http.server.ThreadingHTTPServer):
    def __init__(self, bind, port):
        if ":" in bind:
            self.address_family = socket.AF_INET6
        super().__init__((bind, port), Handler)


def check(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            print(f"{url}: HTTP {r.status}")
            return 0 if r.status == 200 else 1
    except Exception as e:  # refused, timeout, HTTP error
        print(f"{url}: {e}")
        return 1


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--bind", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--routes", required=True)
    c = sub.add_parser("check")
    c.add_argument("url")
    args = p.parse_args()
    if args.cmd == "check":
        return check(args.url)
    Handler.routes_file = args.routes
    server = Server(args.bind, args.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"serving shared instances on {args.bind}:{args.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
