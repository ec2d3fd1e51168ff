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
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

from zenserver import ServiceAccount, ZenServer, clean_env  # noqa: E402

ZENMLFS_BIN = os.environ.get("ZENMLFS_BIN",
                             os.path.join(REPO, "build", "zenmlfs"))

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


def is_mounted(path):
    with open("/proc/self/mounts") as f:
        return any(ln.split()[1] == path for ln in f)


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
    if not os.access(ZENMLFS_BIN, os.X_OK):
        sys.exit("no %s: build first" % ZENMLFS_BIN)

    work = tempfile.mkdtemp(prefix="zenmlfs-bench-", dir="/tmp")
    os.chmod(work, 0o755)
    srv = ZenServer(os.path.join(work, "server"))
    proc = None
    workers = []
    mnt = os.path.join(work, "mnt")
    os.mkdir(mnt)
    try:
        print("starting the ZenML server ...", file=sys.stderr)
        srv.start()
        sa = ServiceAccount(srv, name="zenmlfs-bench-exec")
        keyfile = os.path.join(work, "api-key")
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(sa.key + "\n")
        proc = subprocess.Popen(
            [ZENMLFS_BIN, "-f", "--log", os.path.join(work, "zenmlfs.log"),
             "--url", srv.url, "--api-key-file", keyfile, mnt],
            env=clean_env(), stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while not is_mounted(mnt):
            if proc.poll() is not None or time.time() > deadline:
                sys.exit("zenmlfs did not mount; see %s/zenmlfs.log" % work)
            time.sleep(0.05)
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
        denv = dict(env, ZENML_CONFIG_PATH=os.path.join(work, "zc-direct"),
                    ZENML_STORE_URL=srv.url, ZENML_STORE_API_TOKEN=token,
                    DISABLE_CREDENTIALS_DISK_CACHING="true")
        direct = worker([sys.executable, script], denv)
        workers = [via, direct]

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
    finally:
        for p in workers:
            p.stdin.close()
            p.wait(30)
        if proc is not None:
            if is_mounted(mnt):
                subprocess.run(["fusermount3", "-u", mnt])
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        srv.stop()
        if not is_mounted(mnt):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
