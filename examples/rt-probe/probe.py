#!/usr/bin/env python3
"""rt-probe release helper.

  probe.py loop  --dir D [rt-probe options…]   run rt-probe in rounds forever; after each round
                                                write D/latest.json (rt-probe's JSON) and
                                                D/connection.json (flat figures, the node
                                                publishes them as connection parameters)
  probe.py check --dir D --max-age S            the promise: fails when there is no recent round
                                                or the latest round violated its thresholds

The loop runs in the partition (exclusive CPU, SCHED_FIFO given by the node before exec) and
spends its time waiting for rt-probe, which inherits the policy. rt-probe's own promise mode
(--max-p99-us / --max-miss-ratio) decides whether a round is good.
"""
import json
import os
import subprocess
import sys
import time


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(data)
    os.replace(tmp, path)


def flat(report, rounds):
    lat, dl, sc, pr = (report.get(k, {}) for k in ("latency", "deadline", "sched", "promise"))
    figures = {
        "rt-p50-us": lat.get("p50_us"),
        "rt-p99-us": lat.get("p99_us"),
        "rt-p999-us": lat.get("p999_us"),
        "rt-max-us": lat.get("max_us"),
        "rt-samples": lat.get("samples"),
        "rt-periods": dl.get("periods"),
        "rt-misses": dl.get("misses"),
        "rt-miss-ratio": dl.get("miss_ratio"),
        "rt-policy": sc.get("policy"),
        "rt-priority": sc.get("priority"),
        "rt-affinity": sc.get("affinity"),
        "rt-mlocked": sc.get("mlocked"),
        "rt-promise-ok": pr.get("ok"),
        "rt-rounds": rounds,
        "rt-updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return {k: str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in figures.items() if v is not None}


def loop(d, args):
    os.makedirs(d, exist_ok=True)
    cmd = ["rt-probe"] + args
    if os.environ.get("SLAPOS_RT_MLOCK") == "1":
        cmd.append("--mlock")  # mlockall does not survive exec: the probe locks itself
    print("running", " ".join(cmd), flush=True)
    rounds = 0
    while True:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode == 2 or not p.stdout.strip():
            print(f"rt-probe failed ({p.returncode}): {p.stderr.strip()}", flush=True)
            time.sleep(1)
            continue
        try:
            report = json.loads(p.stdout)
        except ValueError as e:
            print(f"rt-probe printed no JSON: {e}", flush=True)
            time.sleep(1)
            continue
        rounds += 1
        write_atomic(os.path.join(d, "latest.json"), p.stdout)
        write_atomic(os.path.join(d, "connection.json"), json.dumps(flat(report, rounds)))


def check(d, max_age):
    path = os.path.join(d, "latest.json")
    try:
        age = time.time() - os.stat(path).st_mtime
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        print(f"no measurement yet: {e}")
        return 1
    if age > max_age:
        print(f"latest measurement is {age:.0f} s old (> {max_age} s): the probe is not running")
        return 1
    lat, dl, sc = report["latency"], report["deadline"], report["sched"]
    summary = (f"p50 {lat['p50_us']} µs, p99 {lat['p99_us']} µs, max {lat['max_us']} µs, "
               f"misses {dl['misses']}/{dl['periods']}, {sc['policy']} {sc['priority']} on CPU {sc['affinity']}")
    if not report["promise"]["ok"]:
        print("latency degraded: " + "; ".join(report["promise"]["violations"]) + f" ({summary})")
        return 1
    print(summary)
    return 0


def main(argv):
    if len(argv) < 3 or argv[1] != "--dir":
        print(__doc__, file=sys.stderr)
        return 2
    mode, d, rest = argv[0], argv[2], argv[3:]
    if mode == "loop":
        loop(d, rest)
        return 0
    if mode == "check" and len(rest) == 2 and rest[0] == "--max-age":
        return check(d, float(rest[1]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
