"""Run slapos.core's own slapproxy test suites against `slapos-master serve --cfg`.

slapos.core 1.26.1 tests slapproxy in process: `BasicMixin.startProxy` configures the Flask
app and sets `self.app = views.app.test_client()`. This runner replaces that method, so each
test gets a fresh `slapos-master serve --cfg <slapos-proxy.cfg>` (its own database file at the
test's `proxy_db`, port 0) and `self.app` becomes `HttpApp`, an object with the test client's
`get`/`post` that forwards over HTTP with `requests` and answers a response-like object
(`status_code`, `_status_code`, `data`, `json`, `headers`, `content_type`).

Where slapproxy raises in process (the Flask test client propagates the exception), the real
`slap` library sees an HTTP status; `RAISES` maps that status back to the exception the test
expects, route by route, as the library does (`NotFoundError` on a 404).

Tests that cannot run against another server are excluded, each with its reason (`EXCLUDED`
for whole classes; `excluded_reason` finds the tests that read slapproxy's SQLite file or
patch slapproxy's in-process objects).

Usage: python run.py --master BIN --out RESULT.json [--jobs N] [TEST_ID_PREFIX ...]
Prints one line per test (`PASS`/`FAIL`/`EXCLUDED`) and the counts; exit status 0 when the
run completed (the caller judges the counts against its expectations).
"""

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import types
import unittest
import unittest.mock


def _patch(target, *args, **kwargs):
    """`mock.patch`, except `patch('time.time', return_value=T)`: the tests use it to make
    slapproxy's in-process clock read T; our server has its own clock, so the shim waits until
    the real clock reaches T instead (at most a couple of seconds: T is "now + 1 s")."""
    if target == "time.time" and "return_value" in kwargs and not args:
        return _WaitUntil(kwargs["return_value"])
    return unittest.mock.patch(target, *args, **kwargs)


class _WaitUntil(object):
    def __init__(self, when):
        self.when = when

    def __enter__(self):
        while time.time() < self.when:
            time.sleep(min(0.05, max(0.0, self.when - time.time())))
        return None

    def __exit__(self, *exc):
        return False


for _name in ("object", "dict", "multiple", "stopall", "TEST_PREFIX"):
    setattr(_patch, _name, getattr(unittest.mock.patch, _name))

# The suites `import mock`: the standard library's, with the `patch` above.
_mock = types.ModuleType("mock")
_mock.__dict__.update({k: v for k, v in vars(unittest.mock).items() if not k.startswith("__")})
_mock.patch = _patch
sys.modules.setdefault("mock", _mock)

import requests  # noqa: E402

import slapos.slap  # noqa: E402
from slapos.tests import test_slapproxy, test_slapproxy_json_rpc  # noqa: E402

MASTER = None  # path of slapos-master, set by main()
# SLAPPROXY_COMPAT_TRACE=1: print every 4xx/5xx answer (method, path, status, body) on stderr.
TRACE = os.environ.get("SLAPPROXY_COMPAT_TRACE") == "1"

# Whole classes that cannot run against master-lite, with the reason.
EXCLUDED = {
    "TestMultiMasterSupport": "reads slapproxy's SQLite file (forwarded_partition_request) and"
    " expects the forwarding inside the request; master-lite records the request and forwards"
    " it from a background task (docs/slap.md, federation)",
    "TestMultiMasterConnectionError": "multimaster configured through the in-process app config,"
    " and expects 523 from a request to a dead master; master-lite keeps the request pending"
    " and retries (docs/slap.md, federation)",
    "JsonRpcConnectionErrorTestCase": "multimaster configured through the in-process app config,"
    " and expects 523 from a request to a dead master; master-lite keeps the request pending"
    " and retries (docs/slap.md, federation)",
    "TestLocalSoftwareReleaseRootPathMigration": "slapproxy's local_software_release_root URL"
    " rebasing of its own database, checked through its in-process logger (not implemented)",
    "_MigrationTestCase": "loads slapproxy's old SQLite dumps into its database file",
}
for _v in range(10, 18):
    EXCLUDED["TestMigrateVersion%dToLatest" % _v] = EXCLUDED["_MigrationTestCase"]

# Source markers of a test that reads slapproxy's SQLite file or patches its in-process objects.
IN_PROCESS_MARKERS = {
    "sqlite_connect(": "reads slapproxy's SQLite file (its schema is not ours)",
    "execute_db(": "reads slapproxy's SQLite file (its schema is not ours)",
    "sqlite3.": "reads slapproxy's SQLite file (its schema is not ours)",
    "views.app": "patches slapproxy's in-process Flask app",
}

# (route, HTTP status) → the exception slapproxy raises in process for it (what the test expects).
RAISES = {
    ("/getComputerInformation", 404): slapos.slap.NotFoundError,
    ("/getFullComputerInformation", 404): slapos.slap.NotFoundError,
    # `assert` in slapproxy's view: a 500 over HTTP; master-lite answers 400.
    ("/getSoftwareReleaseListFromSoftwareProduct", 400): AssertionError,
    ("/getSoftwareReleaseListFromSoftwareProduct", 500): AssertionError,
}


def excluded_reason(test):
    """Why `test` (a TestCase instance) is excluded, or None."""
    for klass in type(test).__mro__:
        if klass.__name__ in EXCLUDED and klass.__module__.startswith("slapos.tests"):
            return EXCLUDED[klass.__name__]
    method = getattr(type(test), test._testMethodName)
    try:
        source = inspect.getsource(method)
    except (OSError, TypeError):
        return None
    for marker, reason in IN_PROCESS_MARKERS.items():
        if marker in source:
            return reason
    return None


class Response(object):
    """What the tests read of a Flask test response."""

    def __init__(self, r):
        self.status_code = r.status_code
        self._status_code = r.status_code
        self.data = r.content
        self.headers = r.headers
        self.content_type = r.headers.get("Content-Type", "")
        self.mimetype = self.content_type.split(";")[0].strip()

    def get_data(self, as_text=False):
        return self.data.decode("utf-8") if as_text else self.data

    @property
    def json(self):
        return json.loads(self.data)

    @property
    def location(self):
        return self.headers.get("Location")


class HttpApp(object):
    """`views.app.test_client()`'s interface, forwarded to a real server over HTTP."""

    def __init__(self, server):
        self.server = server
        self.session = requests.Session()

    def open(self, method, path, query_string=None, data=None, json=None, headers=None,
             follow_redirects=False, **_):
        headers = dict(headers or {})
        # The test client's host: slapproxy builds absolute URLs from it.
        headers.setdefault("Host", "localhost")
        if isinstance(data, str):
            data = data.encode("utf-8")
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if v is not None}
        if not path.startswith("/"):
            path = "/" + path
        r = self.session.request(
            method, self.server.url + path, params=query_string, data=data, json=json,
            headers=headers, allow_redirects=follow_redirects)
        if TRACE and r.status_code >= 400:
            sys.stderr.write("  %s %s -> %d %s\n" % (method, path, r.status_code, r.text[:300]))
        exc = RAISES.get((path.split("?")[0], r.status_code))
        if exc is not None:
            raise exc("%s %s: %d %s" % (method, path, r.status_code, r.text[:200]))
        return Response(r)

    def get(self, path, **kw):
        return self.open("GET", path, **kw)

    def post(self, path, **kw):
        return self.open("POST", path, **kw)

    def put(self, path, **kw):
        return self.open("PUT", path, **kw)

    def delete(self, path, **kw):
        return self.open("DELETE", path, **kw)


class Server(object):
    """A `slapos-master serve --cfg` for one test; restarted (same database) on a config change."""

    def __init__(self, rootdir, proxy_db, computer_id):
        self.rootdir = rootdir
        self.proxy_db = proxy_db
        self.computer_id = computer_id
        self.products = {}
        self.proc = None
        self.url = None
        self.log = open(os.path.join(rootdir, "master.log"), "ab")

    def write_cfg(self):
        cfg = os.path.join(self.rootdir, "slapos-proxy.cfg")
        products = "".join("\n  %s %s" % kv for kv in sorted(self.products.items()))
        with open(cfg, "w") as f:
            f.write("[slapos]\ncomputer_id = %s\n\n[slapproxy]\nhost = 127.0.0.1\nport = 0\n"
                    "database_uri = %s\nsoftware_product_list =%s\n"
                    % (self.computer_id, self.proxy_db, products))
        return cfg

    def start(self):
        cfg = self.write_cfg()
        env = dict(os.environ, SLAPOS_LOG=os.environ.get("SLAPOS_LOG", "warn"))
        self.proc = subprocess.Popen([MASTER, "serve", "--cfg", cfg], stdout=subprocess.PIPE,
                                     stderr=self.log, env=env)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError("slapos-master serve did not start: %r (log in %s)"
                               % (line, self.rootdir))
        self.url = line[len("listening on "):].strip()

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
            self.proc = None

    def restart(self):
        self.stop()
        self.start()


class AppConfig(dict):
    """`self.app_config`: setting `software_product_list` restarts the server with it."""

    def __init__(self, server):
        super(AppConfig, self).__init__(software_product_list={}, multimaster={})
        self.server = server

    def __setitem__(self, key, value):
        super(AppConfig, self).__setitem__(key, value)
        if key == "software_product_list":
            self.server.products = dict(value)
            self.server.restart()


def start_proxy(self):
    """Replacement of `BasicMixin.startProxy`."""
    os.makedirs(os.path.dirname(self.proxy_db), exist_ok=True)
    server = Server(self._rootdir, self.proxy_db, self.computer_id)
    server.start()
    self.addCleanup(server.stop)
    self._master = server
    self.app_config = AppConfig(server)
    self.app = HttpApp(server)


test_slapproxy.BasicMixin.startProxy = start_proxy


class _ServerProcess(object):
    """What `CliMasterMixin.tearDown` stops (`proxy_process.terminate()`, `.wait()`)."""

    def __init__(self, server):
        self.server = server

    def terminate(self):
        self.server.stop()

    def wait(self):
        return 0


def start_cli_proxy(self):
    """Replacement of `CliMasterMixin.startProxy` (it runs `slapos proxy start` on a fixed
    address): our server, and the CLI's configuration pointed at it."""
    start_proxy(self)
    url = self._master.url
    self.proxyaddr = url
    with open(self.slapos_cfg, "w") as f:
        f.write("[slapos]\nmaster_url = %s\nmaster_rest_url = %s/hateoas\ncomputer_id = %s\n"
                % (url, url, self.computer_id))
    self.proxy_process = _ServerProcess(self._master)


test_slapproxy.CliMasterMixin.startProxy = start_cli_proxy
# CliMasterMixin's configuration names this address before startProxy rewrites it.
os.environ.setdefault("SLAPOS_TEST_IPV4", "127.0.0.1")


def all_tests():
    loader = unittest.TestLoader()
    out = []

    def walk(suite):
        for t in suite:
            if isinstance(t, unittest.TestSuite):
                walk(t)
            else:
                out.append(t)

    for module in (test_slapproxy, test_slapproxy_json_rpc):
        walk(loader.loadTestsFromModule(module))
    # test_slapproxy_json_rpc imports BasicMixin, not test classes: no duplicates across modules.
    return out


def short_id(test):
    return "%s.%s" % (type(test).__name__, test._testMethodName)


def run(tests):
    results = {}
    for test in tests:
        tid = short_id(test)
        reason = excluded_reason(test)
        if reason is not None:
            results[tid] = {"outcome": "excluded", "reason": reason}
            print("EXCLUDED %s: %s" % (tid, reason), flush=True)
            continue
        result = unittest.TestResult()
        started = time.time()
        test.run(result)
        problems = result.errors + result.failures
        if problems:
            detail = problems[0][1].strip().splitlines()
            results[tid] = {"outcome": "failed", "detail": "\n".join(detail[-6:])}
            print("FAIL %s: %s" % (tid, detail[-1]), flush=True)
        elif result.skipped:
            results[tid] = {"outcome": "skipped", "reason": result.skipped[0][1]}
            print("SKIP %s: %s" % (tid, result.skipped[0][1]), flush=True)
        else:
            results[tid] = {"outcome": "passed"}
            print("PASS %s (%.2fs)" % (tid, time.time() - started), flush=True)
    return results


def main():
    global MASTER
    p = argparse.ArgumentParser()
    p.add_argument("--master", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("only", nargs="*")
    args = p.parse_args()
    MASTER = os.path.abspath(args.master)
    tests = all_tests()
    if args.only:
        tests = [t for t in tests if any(short_id(t).startswith(o) for o in args.only)]
    if args.worker is not None:
        results = run(tests[args.worker::args.jobs])
    elif args.jobs > 1:
        procs = []
        for w in range(args.jobs):
            out = "%s.%d" % (args.out, w)
            procs.append((out, subprocess.Popen(
                [sys.executable, __file__, "--master", MASTER, "--out", out,
                 "--jobs", str(args.jobs), "--worker", str(w)] + args.only)))
        results = {}
        for out, proc in procs:
            if proc.wait() != 0:
                sys.exit("worker %s failed" % out)
            with open(out) as f:
                results.update(json.load(f))
            os.unlink(out)
    else:
        results = run(tests)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    if args.worker is None:
        counts = {}
        for r in results.values():
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        print("passed %d failed %d excluded %d skipped %d" % tuple(
            counts.get(k, 0) for k in ("passed", "failed", "excluded", "skipped")))


if __name__ == "__main__":
    tempfile.tempdir = os.environ.get("SLAPPROXY_COMPAT_TMP") or tempfile.gettempdir()
    main()
