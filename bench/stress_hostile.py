#!/usr/bin/env python3
"""Stress: the token's path under hostile metadata load (docs/design.md,
"The token's path").

The long version of tests/test_token_path.py (not run in CI).  Starts a
real ZenML server (tests/zenserver.py), the fault proxy (tests/proxy.py)
and zenmlfs through it as the server's admin, opened to other users
(allow_other,tree_mode=0755), token_lifetime=60 by default; creates
--accounts service accounts over REST (a thread pool), then for
--duration seconds runs, all at once:

  slow      the proxy answers every GET of service accounts (the list,
            and each name) after --delay s (--delay-prefix); meta_ttl=1
            (--meta-ttl), so that listings expire and names go to the
            server
  lookups   as uid 65534 (a child process): stats of missing names under
            service-accounts/ at --rate a second, each a GET answered
            late (when no fresh listing answers it first), each a 404
            whose directory entry the daemon then drops
  sweep     `ls -l service-accounts/` over and over (every account)
  refresh   `echo 1 > refresh` every --refresh-every s: its latency, and
            how long reads still got another token after it returned
  readers   --readers threads reading token (a fresh open each read,
            every --read-every s); each token read is decoded: one with
            less than 30 s left when the read began is a stale read

and prints: reads, stale reads (must be 0), read errors, the slowest
read, the longest a token was still served after a refresh write had
returned (must be ~0), refresh write latency (median/max), the server
requests by route (counted by the proxy), the lookups and sweeps done,
and the daemon's memory and threads at the start and the end.  What
still waits on the mount 40 s after the load stopped is reported STUCK
(with the daemon's threads' kernel wait channels) and the FUSE
connection is aborted, so the script always ends.  Exit status 1 if any
read was stale, a refresh was not what the next read got, anything was
stuck, or the daemon did not unmount at the end.

    .venv/bin/python bench/stress_hostile.py [--duration 180]
        [--accounts 5000] [--lifetime 60] [--delay 3] [--rate 2]
        [--meta-ttl 1] [--delay-prefix /api/v1/service_accounts]
"""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

from mountlib import (abort_connection, fuse_minor,  # noqa: E402
                      read_file, threads_wchan)
from proxy import FaultProxy  # noqa: E402
from zenserver import (ADMIN_ENV, SAS, ZenServer, clean_env,  # noqa: E402
                       jwt_claims)

ZENMLFS_BIN = os.environ.get("ZENMLFS_BIN",
                             os.path.join(REPO, "build", "zenmlfs"))
MARGIN = 30
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                     r"[0-9a-f]{12}")
MIB = 1024.0 * 1024.0

# The uid-65534 child: stats of missing names at RATE a second (each in
# its own thread, at most CAP at once) until SIGTERM or DURATION s; then
# prints {"done", "errnos", "max_s", "skipped"} as JSON.
LOOKUPS_PY = r"""
import errno, json, os, signal, sys, threading, time
base, rate, duration, cap = sys.argv[1], float(sys.argv[2]), \
    float(sys.argv[3]), int(sys.argv[4])
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
lock = threading.Lock()
res = {"done": 0, "errnos": {}, "max_s": 0.0, "skipped": 0}
live = []
def one(p):
    t = time.monotonic()
    try:
        os.stat(p)
        e = "found"
    except OSError as ex:
        e = errno.errorcode.get(ex.errno, str(ex.errno))
    with lock:
        res["done"] += 1
        res["errnos"][e] = res["errnos"].get(e, 0) + 1
        res["max_s"] = max(res["max_s"], time.monotonic() - t)
end = time.monotonic() + duration
n = 0
while not stop.is_set() and time.monotonic() < end:
    n += 1
    live[:] = [t for t in live if t.is_alive()]
    if len(live) < cap:
        t = threading.Thread(target=one, daemon=True,
                             args=(os.path.join(base, "ghost-%07d" % n),))
        t.start()
        live.append(t)
    else:
        res["skipped"] += 1
    stop.wait(1.0 / rate)
for t in live:
    t.join(30)
res["stuck"] = sum(1 for t in live if t.is_alive())
print(json.dumps(res), flush=True)
"""


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def proc_facts(pid):
    """{"anon", "rss" (bytes), "threads"} of pid."""
    d = {"anon": 0, "rss": 0, "threads": 0}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    d["anon"] = int(line.split()[1]) * 1024
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    d["rss"] = int(line.split()[1]) * 1024
                elif line.startswith("Threads:"):
                    d["threads"] = int(line.split()[1])
    except OSError:
        pass
    return d


def fmt_facts(d):
    return "anon %.2f MiB, rss %.2f MiB, %d threads" % (
        d["anon"] / MIB, d["rss"] / MIB, d["threads"])


def shape(path):
    """A request path with ids and names made generic."""
    path = UUID_RE.sub("{id}", path)
    parts = path.split("/")
    for i in range(len(parts) - 1):
        if parts[i] in ("service_accounts", "api_keys") and \
                parts[i + 1] != "{id}":
            parts[i + 1] = "{name}" if not parts[i + 1].startswith(
                "ghost-") else "{ghost}"
    return "/".join(parts)


def create_accounts(srv, n, workers):
    tok = srv.admin_token()
    local = threading.local()

    def one(i):
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
            s.headers["Authorization"] = "Bearer " + tok
        name = "hostile-%05d" % i
        for _ in range(5):
            try:
                r = s.post(srv.url + SAS, timeout=60,
                           json={"name": name, "active": True})
            except requests.RequestException:
                time.sleep(0.5)
                continue
            if r.status_code in (200, 409):
                return
            time.sleep(0.5)
        raise RuntimeError("cannot create %s" % name)

    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, range(n)))


class Readers:
    """n threads: fresh open+read of token every `every` s; each read's
    (start, end, token bytes or errno)."""

    def __init__(self, path, n, every):
        self.path = path
        self.every = every
        self.lock = threading.Lock()
        self.reads = 0
        self.stale = []         # (t, seconds left)
        self.errors = {}
        self.slowest = 0.0
        self.last = None        # (t_start, token) of the latest read
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True)
                        for _ in range(n)]

    def _run(self):
        while not self.stop.is_set():
            t0 = time.time()
            try:
                tok = read_file(self.path)
                err = None
            except OSError as e:
                tok, err = None, e.errno
            t1 = time.time()
            with self.lock:
                self.slowest = max(self.slowest, t1 - t0)
                if err is not None:
                    k = os.strerror(err)
                    self.errors[k] = self.errors.get(k, 0) + 1
                else:
                    self.reads += 1
                    try:
                        left = jwt_claims(tok.decode())["exp"] - t0
                    except (ValueError, KeyError, UnicodeDecodeError):
                        left = -1e9
                    if left < MARGIN:
                        self.stale.append((t0, left))
            self.stop.wait(self.every)

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=180)
    ap.add_argument("--accounts", type=int, default=5000)
    ap.add_argument("--lifetime", type=int, default=60)
    ap.add_argument("--delay", type=float, default=3.0,
                    help="seconds the server takes per service account "
                    "GET (the list, and each name: the sweep's and the "
                    "lookups')")
    ap.add_argument("--delay-prefix", default=SAS,
                    help="the GETs delayed (a path prefix; %s/ghost- "
                    "delays only the missing names, which a fresh "
                    "listing answers without a request)" % SAS)
    ap.add_argument("--meta-ttl", type=int, default=1,
                    help="zenmlfs meta_ttl: how long a listing answers "
                    "missing names by itself")
    ap.add_argument("--rate", type=float, default=2.0,
                    help="missing-name lookups a second (uid 65534)")
    ap.add_argument("--cap", type=int, default=12,
                    help="at most this many lookups at once")
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--read-every", type=float, default=0.05)
    ap.add_argument("--refresh-every", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=4,
                    help="threads creating accounts")
    ap.add_argument("--opts", default="",
                    help="more -o options for zenmlfs")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="zenmlfs-hostile-", dir="/tmp")
    os.chmod(work, 0o755)
    mnt = os.path.join(work, "mnt")
    os.mkdir(mnt)
    os.chmod(mnt, 0o755)
    srv = ZenServer(os.path.join(work, "server"))
    proxy = proc = lookups = readers = None
    stop = threading.Event()
    bg = []
    failed = []
    try:
        log("starting the ZenML server ...")
        srv.start()
        t = time.monotonic()
        create_accounts(srv, args.accounts, args.workers)
        log("%d accounts created in %.1f s" % (args.accounts,
                                               time.monotonic() - t))
        proxy = FaultProxy("127.0.0.1", srv.port).start()
        home = os.path.join(work, "home")
        os.mkdir(home, 0o700)
        env = clean_env(dict(ADMIN_ENV))
        env["HOME"] = home
        env["XDG_CONFIG_HOME"] = os.path.join(home, ".config")
        opts = "allow_other,tree_mode=0755,token_lifetime=%d,meta_ttl=%d" \
            % (args.lifetime, args.meta_ttl)
        if args.opts:
            opts += "," + args.opts
        logf = os.path.join(work, "zenmlfs.log")
        proc = subprocess.Popen(
            [ZENMLFS_BIN, "-f", "--log", logf, "--url", proxy.url,
             "-o", opts, mnt], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while fuse_minor(mnt) is None:
            if proc.poll() is not None or time.time() > deadline:
                sys.exit("zenmlfs did not mount; see %s" % logf)
            time.sleep(0.05)
        sa_dir = os.path.join(mnt, "service-accounts")
        token = os.path.join(mnt, "token")
        read_file(token)
        start_facts = proc_facts(proc.pid)
        proxy.add_fault(args.delay_prefix, "delay", delay=args.delay)
        proxy.reset_counts()
        log("mounted %s (%s); load for %.0f s ..." % (mnt, opts,
                                                      args.duration))

        lookups = subprocess.Popen(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-c", LOOKUPS_PY, sa_dir, str(args.rate),
             str(args.duration), str(args.cap)],
            stdout=subprocess.PIPE, text=True, cwd="/")
        sweeps = []
        inflight = {}       # what is waiting on the mount: since when

        def sweep():
            while not stop.is_set():
                t0 = time.monotonic()
                p = subprocess.Popen(["ls", "-l", sa_dir],
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
                inflight["sweep"] = t0
                out = p.communicate()[0]    # the watchdog below ends it
                inflight.pop("sweep", None)
                n = out.count(b"\n") - 1 if p.returncode == 0 else -1
                sweeps.append((n, time.monotonic() - t0))
        refreshes = []      # (latency, seconds another token was served)

        def refresh():
            while not stop.wait(args.refresh_every):
                minted = len(proxy.tokens_out)
                t0 = time.monotonic()
                inflight["refresh"] = t0
                try:
                    with open(os.path.join(mnt, "refresh"), "w") as f:
                        f.write("1\n")
                except OSError as e:
                    refreshes.append((time.monotonic() - t0, None,
                                      os.strerror(e.errno)))
                    continue
                finally:
                    inflight.pop("refresh", None)
                t1 = time.monotonic()
                new = proxy.tokens_out[-1].encode() \
                    if len(proxy.tokens_out) > minted else None
                age = None
                while new is not None and time.monotonic() - t1 < 30:
                    try:
                        if read_file(token) == new:
                            age = time.monotonic() - t1
                            break
                    except OSError:
                        pass
                    time.sleep(0.05)
                refreshes.append((t1 - t0, age, None))

        readers = Readers(token, args.readers, args.read_every)
        readers.start()
        bg = [threading.Thread(target=sweep, daemon=True),
              threading.Thread(target=refresh, daemon=True)]
        for th in bg:
            th.start()
        end = time.monotonic() + args.duration
        while time.monotonic() < end and proc.poll() is None:
            time.sleep(1)
        stop.set()
        readers.stop.set()
        # The watchdog: what still waits on the mount a while after the
        # load stopped is stuck; the daemon's threads are shown, and the
        # FUSE connection aborted so that everything ends.
        grace = time.monotonic() + 2 * 20 + args.delay
        for th in bg + readers.threads:
            th.join(max(0.1, grace - time.monotonic()))
        try:
            lk = json.loads(lookups.communicate(
                timeout=max(1, grace - time.monotonic()))[0] or "{}")
        except subprocess.TimeoutExpired:
            lk = None
        stuck = ["%s (for %.0f s)" % (k, time.monotonic() - v)
                 for k, v in list(inflight.items())]
        stuck += ["a reader"] * sum(1 for t in readers.threads
                                    if t.is_alive())
        if lk is None:
            stuck.append("the lookups of uid 65534")
        stuck_states = {}
        if stuck:
            stuck_states = threads_wchan(proc.pid)
            minor = fuse_minor(mnt)
            aborted = abort_connection(minor)
            failed.append("stuck")
            for th in bg + readers.threads:
                th.join(30)
            if lk is None:
                try:
                    lk = json.loads(lookups.communicate(timeout=30)[0]
                                    or "{}")
                except subprocess.TimeoutExpired:
                    lookups.kill()
                    lk = {"stuck": "did not end"}
        end_facts = proc_facts(proc.pid)

        # ---- the report
        print("zenmlfs %s, %d accounts, -o %s, %.0f s: GETs of %s* "
              "delayed %.1f s, missing names looked up at %.1f/s as uid "
              "65534, ls -l sweeps, refresh every %.0f s, %d readers"
              % (ZENMLFS_BIN, args.accounts, opts, args.duration,
                 args.delay_prefix, args.delay, args.rate,
                 args.refresh_every, args.readers))
        print("reads: %d, stale (< %d s left): %d, errors: %s, slowest "
              "read: %.2f s" % (readers.reads, MARGIN, len(readers.stale),
                                readers.errors or "none", readers.slowest))
        if readers.stale:
            worst = min(left for _, left in readers.stale)
            t_first = min(t for t, _ in readers.stale)
            print("  stale reads from %s, the worst %.1f s %s its exp"
                  % (time.strftime("%H:%M:%S", time.localtime(t_first)),
                     abs(worst), "before" if worst >= 0 else "AFTER"))
            failed.append("stale reads")
        lat = [r[0] for r in refreshes if r[2] is None]
        ages = [r[1] for r in refreshes if r[2] is None]
        errs = [r[2] for r in refreshes if r[2] is not None]
        if lat:
            known = [a for a in ages if a is not None]
            print("refresh writes: %d (%d failed%s), latency median %.2f s "
                  "max %.2f s; another token served after the write "
                  "returned: max %s, in %d of %d writes"
                  % (len(refreshes), len(errs),
                     ": %s" % sorted(set(errs)) if errs else "",
                     statistics.median(lat), max(lat),
                     ("%.2f s" % max(known)) if len(known) == len(ages)
                     else "> 30 s", sum(1 for a in ages
                                        if a is None or a > 0.05),
                     len(ages)))
            if any(a is None or a > 0.05 for a in ages):
                failed.append("refresh not what the next read got")
        else:
            print("refresh writes: none succeeded %s" % errs)
            failed.append("no refresh")
        print("lookups (uid 65534): %s" % lk)
        ok = [s for n, s in sweeps if n >= 0]
        print("sweeps: %d (%d failed; ls -l of %s entries), median %.1f s, "
              "max %.1f s" % (len(sweeps), len(sweeps) - len(ok),
                              sorted({n for n, _ in sweeps if n >= 0})[-1:]
                              or "-", statistics.median(ok) if ok else 0,
                              max(ok or [0])))
        agg = {}
        for (method, path), n in proxy.method_counts.items():
            k = "%s %s" % (method, shape(path))
            agg[k] = agg.get(k, 0) + n
        print("server requests by route:")
        for k, n in sorted(agg.items(), key=lambda kv: -kv[1]):
            print("  %6d  %s" % (n, k))
        if stuck:
            print("STUCK %.0f s after the load stopped: %s; daemon threads "
                  "(state:wchan): %s; FUSE connection aborted: %s"
                  % (2 * 20 + args.delay, ", ".join(stuck), stuck_states,
                     aborted))
        print("daemon at start: %s" % fmt_facts(start_facts))
        print("daemon at end:   %s" % fmt_facts(end_facts))
    finally:
        stop.set()
        if readers is not None:
            readers.stop.set()
        if lookups is not None and lookups.poll() is None:
            lookups.send_signal(signal.SIGTERM)
        if proxy is not None:
            proxy.clear_faults()
            proxy.release(forward=False)
        if proc is not None:
            t0 = time.monotonic()
            subprocess.run(["fusermount3", "-u", mnt],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
            try:
                proc.wait(30)
                print("unmounted: the daemon exited %s after %.1f s"
                      % (proc.returncode, time.monotonic() - t0))
            except subprocess.TimeoutExpired:
                failed.append("the daemon did not exit")
                abort_connection(fuse_minor(mnt))
                proc.kill()
                proc.wait(10)
            if fuse_minor(mnt) is not None:
                subprocess.run(["fusermount3", "-uz", mnt],
                               stderr=subprocess.DEVNULL)
        if lookups is not None:
            try:
                lookups.wait(30)
            except subprocess.TimeoutExpired:
                lookups.kill()
        if proxy is not None:
            proxy.stop()
        srv.stop()
        if os.environ.get("ZENMLFS_KEEP"):
            print("kept:", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("verdict: %s" % ("ok" if not failed else "FAILED: " +
                           ", ".join(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
