#!/usr/bin/env python3
"""Benchmark: what does `zenmlfs exec` cost a ZenML SDK program?

Starts a real ZenML server (tests/zenserver.py), a service account with an
API key and zenmlfs mounted with it, then measures in one run:

  1. one SDK call (Client().zen_store.get_user(): GET /current-user) in a
     process running through `zenmlfs exec`, against the baseline: the same
     call with a valid token given directly (ZENML_STORE_API_TOKEN = the
     mount's token, ZENML_STORE_URL = the server).  Both processes stay up;
     rounds of --calls calls alternate between them.  Goal: median ratio
     <= 1.1x.
  2. exec's own start-up: `zenmlfs exec -- /bin/true` against `/bin/true`,
     alternated.  Goal: <= 20 ms more.

Run (after scripts/test or scripts/up built everything):
    .venv/bin/python bench/bench_exec.py [--calls N] [--rounds R]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

from benchlib import ZENMLFS_BIN, bench_mount, clean_env

WORKER = r"""
import sys, time
from zenml.client import Client
store = Client().zen_store
store.get_user()
print("ready", flush=True)
for line in sys.stdin:
    n = int(line)
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        store.get_user()
        ts.append(time.perf_counter() - t)
    print(" ".join("%.7f" % x for x in ts), flush=True)
"""


def worker(cmd, env):
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, bufsize=1)
    while True:
        ln = p.stdout.readline()
        if not ln:
            sys.exit("worker failed: %s" % cmd)
        if ln.strip() == "ready":
            return p


def round_of(p, n):
    p.stdin.write("%d\n" % n)
    p.stdin.flush()
    return [float(x) for x in p.stdout.readline().split()]


def wall(cmd, env):
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--starts", type=int, default=40)
    args = ap.parse_args()

    with bench_mount("zenmlfs-bench-exec") as b:
        workers = []
        try:
            run(args, b, workers)
        finally:
            for p in workers:
                p.stdin.close()
                p.wait(30)


def run(args, b, workers):
    """Everything measured, on the mount of Bench b; the SDK processes
    started go to workers."""
    srv, mnt, work = b.srv, b.mnt, b.work
    with open(os.path.join(mnt, "token")) as f:
        token = f.read()

    env = clean_env()
    env.update(HOME=work, ZENML_ANALYTICS_OPT_IN="false",
               ZENML_CONFIG_PATH=os.path.join(work, "zc-exec"))
    script = os.path.join(work, "worker.py")
    with open(script, "w") as f:
        f.write(WORKER)
    via = worker([ZENMLFS_BIN, "exec", "--mount", mnt, "--",
                  sys.executable, script], env)
    workers.append(via)
    denv = dict(env, ZENML_CONFIG_PATH=os.path.join(work, "zc-direct"),
                ZENML_STORE_URL=srv.url, ZENML_STORE_API_TOKEN=token,
                DISABLE_CREDENTIALS_DISK_CACHING="true")
    direct = worker([sys.executable, script], denv)
    workers.append(direct)

    a, b, ratios = [], [], []
    for _ in range(args.rounds):
        d = round_of(direct, args.calls)
        v = round_of(via, args.calls)
        a += d
        b += v
        ratios.append(statistics.median(v) / statistics.median(d))
    md, mv = statistics.median(a), statistics.median(b)
    print("SDK call (GET /current-user), %d calls each, %d alternated "
          "rounds" % (len(a), args.rounds))
    print("  token given directly (baseline): median %.2f ms"
          % (md * 1e3))
    print("  through zenmlfs exec:            median %.2f ms  (+%.2f ms)"
          % (mv * 1e3, (mv - md) * 1e3))
    print("  ratio exec / baseline: %.3fx  (per round: min %.3f, max "
          "%.3f)  goal <= 1.1x: %s"
          % (mv / md, min(ratios), max(ratios),
             "met" if mv / md <= 1.1 else "NOT met"))

    true = shutil.which("true")
    cmd_exec = [ZENMLFS_BIN, "exec", "--mount", mnt, "--", true]
    for _ in range(3):
        wall(cmd_exec, env)
        wall([true], env)
    te, tt = [], []
    for _ in range(args.starts):
        tt.append(wall([true], env))
        te.append(wall(cmd_exec, env))
    me, mt = statistics.median(te), statistics.median(tt)
    print("start-up, %d alternated runs" % args.starts)
    print("  %s alone (baseline):     median %.2f ms" % (true, mt * 1e3))
    print("  zenmlfs exec -- %s:     median %.2f ms" % (true, me * 1e3))
    print("  exec's own start-up: %.2f ms (ratio %.2fx)  goal <= 20 ms: "
          "%s" % ((me - mt) * 1e3, me / mt,
                  "met" if me - mt <= 0.020 else "NOT met"))


if __name__ == "__main__":
    main()
