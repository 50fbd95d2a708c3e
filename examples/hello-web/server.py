#!/usr/bin/env python3
"""hello-web: serve one directory on one address and port (an edge-node example service).

GET /healthz answers "ok" (used by the instance's promise); everything else is a static file
from --directory. Only the Python standard library is used.
"""
import argparse
import functools
import http.server
import signal
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--directory", required=True)
    args = p.parse_args()
    handler = functools.partial(Handler, directory=args.directory)
    server = http.server.ThreadingHTTPServer((args.bind, args.port), handler)
    # TERM (sent by the node on stop) ends serve_forever cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"serving {args.directory} on http://{args.bind}:{args.port}/", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
