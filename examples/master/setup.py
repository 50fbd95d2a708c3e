#!/usr/bin/env python3
"""Prepare step of the master instance: the inner master's files and what a node needs to join it.

Runs (as the partition's user) on every `started` pass, before the master service starts:

* the first time, `slapos-master user create` makes the database (--create-db), the CA (in
  HOME/tls) and two certificates: `admin` (the requester's operator identity, published) and
  `monitor` (a plain user, used only by the health promise);
* for each computer id of --computers, a one-time enrollment token (`token create`), kept in
  HOME/tokens.json and created again only once it has expired (a spent token stays published:
  the master refuses it with a clear message);
* HOME/connection.json (0600, atomic rename): the CA certificate and its SHA-256 fingerprint,
  the admin certificate and key, one `enroll-token-<computer>` per computer. The node merges it
  over the profile's [connection] and publishes it.

Only the Python standard library is used. Exit 1 with one line saying what is wrong.
"""
import argparse
import hashlib
import json
import os
import re
import ssl
import subprocess
import sys
import time

COMPUTER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Refused(Exception):
    pass


def computers(text):
    """The --computers value: a JSON list or string (comma or space separated ids)."""
    try:
        value = json.loads(text) if text else []
    except ValueError:
        value = text
    if isinstance(value, str):
        value = [c for c in re.split(r"[,\s]+", value) if c]
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise Refused("parameter computers: expected a list of computer ids or a comma separated string")
    for c in value:
        if not COMPUTER_ID.match(c):
            raise Refused(f"parameter computers: {c[:80]!r} is not a computer id ([A-Za-z0-9_.-]{{1,64}})")
    return sorted(set(value))


def run(binary, *args):
    """`slapos-master ARGS`; its stdout, or Refused with its error."""
    out = subprocess.run([binary, *args], capture_output=True, text=True, timeout=50)
    if out.returncode != 0:
        raise Refused(f"slapos-master {args[0]} {args[1]}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def write_private(path, text):
    """Write `text` to `path` (0600) through a temporary file and a rename."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def user(binary, home, db, name, admin):
    """The certificate of `name` in HOME/creds, issued once (the first one creates db and CA)."""
    creds = os.path.join(home, "creds")
    pem, key = (os.path.join(creds, f"{name}.{ext}") for ext in ("pem", "key"))
    if os.path.exists(pem) and os.path.exists(key):
        return
    for leftover in (pem, key):  # an interrupted earlier issue: issue again
        if os.path.exists(leftover):
            os.unlink(leftover)
    args = ["user", "create", name, "--out", creds, "--tls-dir", os.path.join(home, "tls"), "--db", db, "--create-db"]
    if admin:
        args.append("--admin")
    run(binary, *args)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--binary", required=True, help="the slapos-master executable")
    p.add_argument("--home", required=True, help="the master's directory in the partition")
    p.add_argument("--computers", default="", help="computers that may enroll (JSON list or ids)")
    p.add_argument("--ttl", default="86400", help="validity of a new token, seconds")
    a = p.parse_args()
    try:
        if not (os.path.isfile(a.binary) and os.access(a.binary, os.X_OK)):
            raise Refused(
                f"slapos-master not found at {a.binary}: install it next to slapos-node (the node's "
                "tools_dir) or give its path as the master_binary parameter"
            )
        try:
            ttl = int(a.ttl)
        except ValueError:
            ttl = 0
        if not 60 <= ttl <= 365 * 86400:
            raise Refused(f"parameter token_ttl: {a.ttl[:40]!r} is not a number of seconds in 60..31536000")
        wanted = computers(a.computers)
        os.makedirs(a.home, mode=0o700, exist_ok=True)
        db = os.path.join(a.home, "db", "master.db")
        user(a.binary, a.home, db, "admin", True)
        user(a.binary, a.home, db, "monitor", False)

        tokens_file = os.path.join(a.home, "tokens.json")
        try:
            with open(tokens_file) as f:
                tokens = json.load(f)
        except FileNotFoundError:
            tokens = {}
        now = time.time()
        for c in wanted:
            t = tokens.get(c)
            if not t or t["expires"] <= now + 60:
                token = run(a.binary, "token", "create", "--computer", c, "--ttl", str(ttl), "--db", db).strip()
                tokens[c] = {"token": token, "expires": now + ttl}
        write_private(tokens_file, json.dumps(tokens, indent=1, sort_keys=True))

        def read(*parts):
            with open(os.path.join(a.home, *parts)) as f:
                return f.read()

        ca = read("tls", "ca.pem")
        connection = {
            "ca-pem": ca,
            "ca-sha256": hashlib.sha256(ssl.PEM_cert_to_DER_cert(ca)).hexdigest(),
            "admin-cert": read("creds", "admin.pem"),
            "admin-key": read("creds", "admin.key"),
        }
        for c in wanted:
            connection[f"enroll-token-{c}"] = tokens[c]["token"]
        write_private(os.path.join(a.home, "connection.json"), json.dumps(connection, indent=1, sort_keys=True))
    except (Refused, OSError, subprocess.SubprocessError) as e:
        print(f"master setup: {e}", file=sys.stderr)
        return 1
    print(f"master setup: {len(wanted)} enrollment token(s) published")
    return 0


if __name__ == "__main__":
    sys.exit(main())
