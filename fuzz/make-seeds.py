#!/usr/bin/env python3
"""Seed corpus of the SLAP targets from the captured exchanges (fuzz/README.md).

Reads proto/tests/fixtures/slap-wire/*-exchanges.txt (captures of slapos.core 1.26.1) and
writes, into fuzz/corpus/<target>/seed-*:
  marshal_roundtrip: every complete xml_marshaller body, as captured (lxml pretty-printed) and,
                     with the slapos venv, in its one-line wire form and shared twice (real
                     <reference> elements: Python's dumps([v, v, {"k": v}]));
  slap_forms:        every captured POST form, urlencoded as the client sends it.
Run scripts/deps/slapos-venv.sh first for the wire and reference forms. Idempotent.
"""
import hashlib, os, re, subprocess, sys, urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "proto/tests/fixtures/slap-wire")
VENV = os.path.join(REPO, ".venv/slapos/bin/python")


def exchanges(path):
    """(request line, [(field, value)], response) per exchange."""
    out = []
    for block in open(path, encoding="utf-8").read().split("=" * 100 + "\n"):
        lines = block.splitlines()
        if not lines:
            continue
        fields, response, cur = [], None, None
        for line in lines[1:]:
            m = re.match(r"  form\[([^\]]*)\] = (.*)$", line)
            if m:
                cur = [m.group(1), [m.group(2)]]
                fields.append(cur)
                continue
            m = re.match(r"  RESPONSE: (.*)$", line)
            if m:
                cur = ["RESPONSE", [m.group(1)]]
                response = cur
                continue
            if cur is not None and line.startswith("    "):
                cur[1].append(line[4:])
            else:
                cur = None
        out.append((lines[0], [(k, "\n".join(v)) for k, v in fields],
                    "\n".join(response[1]) if response else None))
    return out


def write(target, data):
    d = os.path.join(REPO, "fuzz/corpus", target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


bodies = []
for name in ("http-exchanges.txt", "node-http-exchanges.txt"):
    for request, fields, response in exchanges(os.path.join(FIXTURES, name)):
        for _, v in fields:
            if v.startswith("<marshal>"):
                bodies.append(v)
        if response and response.startswith("<marshal>"):
            bodies.append(response)
        if request.startswith("POST") and fields:
            write("slap_forms", urllib.parse.urlencode(fields).encode())
complete = [b for b in bodies if b.rstrip().endswith("</marshal>")]
for b in complete:
    write("marshal_roundtrip", b.encode())
if os.path.exists(VENV):
    script = (
        "import sys, json\n"
        "from slapos.util import dumps, loads\n"
        "for line in sys.stdin:\n"
        "    v = loads(json.loads(line).encode())\n"
        "    print(json.dumps([dumps(v).decode(), dumps([v, v, {'k': v}]).decode()]))\n"
    )
    import json
    p = subprocess.run([VENV, "-c", script], input="".join(json.dumps(b) + "\n" for b in complete),
                       capture_output=True, text=True, check=True)
    for line in p.stdout.splitlines():
        for doc in json.loads(line):
            write("marshal_roundtrip", doc.encode())
else:
    print("make-seeds: no slapos venv: wire and reference forms skipped", file=sys.stderr)
print("make-seeds: %d marshal bodies" % len(complete))
