#!/usr/bin/env python3
"""Benchmark: does the cost of zenmlfs follow the work asked, not the size
of the server?  (docs/design.md, Scale.)

Starts a real ZenML server (tests/zenserver.py), the counting proxy
(tests/proxy.py) and zenmlfs mounted through it as the server's admin (on
the OSS server only the admin manages service accounts), then, for each N
in --sizes, creates service accounts over REST until there are N (a thread
pool; the time is printed) and measures, each step against its baseline in
alternated repeats (ratio = zenmlfs / baseline: min/median/max):

  ls, ls -l, cat */id of service-accounts/   vs one `curl` GET of the
      hydrated list (size=10000&hydrate=true), with the cache expired
      (the goals) and warm
  echo 0|1 > keys/k/active, echo 0|1 > active (the account),
  echo 60 > keys/k/rotate                    vs one `curl` PUT
  mkdir service-accounts/NEW                 vs one `curl` POST
      each with a warm cache (the objects just read) and an expired one

with the requests each zenmlfs step sent (counted by the proxy) and the
daemon's memory after it (Anonymous and Private_* of
/proc/PID/smaps_rollup, VmRSS).  Then: the memory goals (idle, after
`ls -l` of the largest N, back near idle within 2*meta_ttl), memory over
--refreshes writes to `refresh`, and the requests an idle mount and a
reading one send (measured over --idle seconds, per hour).

Every timed step is a process, on both sides (`sh -c`, `ls`, `mkdir`,
`curl`); the baselines go through the same proxy as zenmlfs.  A step with
an expired cache waits for the expiry before each pair, which then runs
in alternated order: both sides take their turn at being the first
request after the pause (the server and the proxy have let their kept
connections go, and an idle machine wakes up slower).

Run (after scripts/test or scripts/up built everything):
    .venv/bin/python bench/bench_scale.py [--sizes 100,1000,10000]
                                          [--repeats R] [--quick]
"""

import argparse
import concurrent.futures
import os
import re
import secrets
import shutil
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

from proxy import FaultProxy  # noqa: E402
from zenserver import ZenServer, clean_env  # noqa: E402

ZENMLFS_BIN = os.environ.get("ZENMLFS_BIN",
                             os.path.join(REPO, "build", "zenmlfs"))
SAS = "/api/v1/service_accounts"
LIST_QUERY = "?page=1&size=10000&hydrate=true"
ADMIN_ENV = {"ZENML_STORE_USERNAME": "default", "ZENML_STORE_PASSWORD": ""}
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                     r"[0-9a-f]{12}")
MIB = 1024.0 * 1024.0

# Goals (issue 9): ratio to the baseline, at the largest N for reads.
READ_GOALS = {"ls": 1.5, "ls -l": 2.0, "cat */id": 3.0}
WRITE_GOAL = 1.2


# ------------------------------------------------------------------ helpers


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def is_mounted(path):
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def fmt_s(s):
    if s >= 1:
        return "%.2f s" % s
    return "%.1f ms" % (s * 1e3)


def mem(pid):
    """{"anon", "priv", "rss"} of pid in bytes (smaps_rollup, status)."""
    d = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":"):
                d[parts[0][:-1]] = int(parts[1]) * 1024
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                d["VmRSS"] = int(line.split()[1]) * 1024
    return {"anon": d.get("Anonymous", 0),
            "priv": d.get("Private_Clean", 0) + d.get("Private_Dirty", 0),
            "rss": d.get("VmRSS", 0)}


def fmt_mem(m):
    return "%5.2f %5.2f %5.2f" % (m["anon"] / MIB, m["priv"] / MIB,
                                  m["rss"] / MIB)


def shape(path, names):
    """A request path with UUIDs and account names made generic."""
    path = UUID_RE.sub("{id}", path)
    parts = path.split("/")
    return "/".join("{name}" if p in names else p for p in parts)


def diff_counts(before, after):
    return {k: after.get(k, 0) - before.get(k, 0)
            for k in after if after.get(k, 0) != before.get(k, 0)}


def fmt_counts(d, names):
    """{(method, path): n} as "METHOD path xn, ...", paths made generic
    (see shape)."""
    agg = {}
    for (method, path), v in d.items():
        k = "%s %s" % (method, shape(path, names))
        agg[k] = agg.get(k, 0) + v
    return ", ".join("%s x%d" % kv for kv in sorted(agg.items())) or "-"


class Mount:
    """zenmlfs -f mounted as the admin, through the proxy."""

    def __init__(self, work, url, opts, tag="mnt"):
        self.path = os.path.join(work, tag)
        os.mkdir(self.path)
        home = os.path.join(work, tag + "-home")
        os.mkdir(home, 0o700)
        self.log_path = os.path.join(work, tag + ".log")
        env = clean_env(dict(ADMIN_ENV))
        env["HOME"] = home
        env["XDG_CONFIG_HOME"] = os.path.join(home, ".config")
        cmd = [ZENMLFS_BIN, "-f", "--log", self.log_path, "--url", url]
        if opts:
            cmd += ["-o", opts]
        cmd.append(self.path)
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while not is_mounted(self.path):
            if self.proc.poll() is not None or time.time() > deadline:
                self.umount()
                sys.exit("zenmlfs did not mount; see %s" % self.log_path)
            time.sleep(0.05)

    def join(self, *p):
        return os.path.join(self.path, *p)

    def status(self):
        d = {}
        with open(self.join("status")) as f:
            for line in f:
                k, _, v = line.partition(":")
                d[k.strip()] = v.strip()
        return d

    def mem(self):
        return mem(self.proc.pid)

    def umount(self):
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", self.path])
            if is_mounted(self.path):
                subprocess.run(["fusermount3", "-uz", self.path])
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def run(cmd, cwd=None):
    """Time one process; fail loudly when it fails."""
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd),
                                                    r.returncode,
                                                    r.stderr[-2000:]))
    return dt


class Bench:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.ttl = args.meta_ttl
        self.srv = ZenServer(os.path.join(work, "server"))
        self.proxy = None
        self.mnt = None
        self.names = set()
        self.created = 0        # accounts on the server (targets too)
        self.create_s = 0.0     # seconds spent making them
        self.extra = []         # ids of accounts made by steps (deleted)
        self.rows = []          # (N, step, ratios) for the summary
        self.mem_notes = []
        self.expire_at = 0.0    # when the daemon's cache is surely stale

    # -- setup ------------------------------------------------------------

    def start(self):
        log("starting the ZenML server ...")
        self.srv.start()
        tok = self.srv.admin_token()
        self.proxy = FaultProxy("127.0.0.1", self.srv.port).start()
        hdr = os.path.join(self.work, "auth-header")
        fd = os.open(hdr, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("Authorization: Bearer %s\n" % tok)
        self.curl = ["curl", "-sf", "-o", "/dev/null", "-H", "@" + hdr]
        self.curl_json = self.curl + ["-H", "Content-Type: application/json"]
        # The accounts the writes act on, with one key each.
        self.target = {}
        for tag in ("z", "c"):  # zenmlfs's and curl's own
            name = "target-" + tag
            sa = self.srv.create_service_account(name)
            self.created += 1
            k = self.srv.create_api_key(sa["id"], "k")
            self.target[tag] = (name, sa["id"], k["id"])
            self.names.add(name)
        self.mnt = Mount(self.work, self.proxy.url,
                         "meta_ttl=%d" % self.ttl)
        time.sleep(1)
        self.mem_idle = self.mnt.mem()

    def stop(self):
        if self.mnt is not None:
            self.mnt.umount()
        if self.proxy is not None:
            self.proxy.stop()
        self.srv.stop()

    def create_accounts(self, n):
        """Service accounts bench-NNNNN until there are n on the server
        (the two targets count: n = 10,000 is one page of the list, as
        the server's largest page is 10,000); seconds and how many."""
        todo = list(range(self.created, n))
        if not todo:
            return 0.0, 0
        tok = self.srv.admin_token()
        local = threading.local()

        def one(i):
            s = getattr(local, "s", None)
            if s is None:
                s = local.s = requests.Session()
                s.headers["Authorization"] = "Bearer " + tok
            name = "bench-%05d" % i
            for attempt in range(5):
                try:
                    r = s.post(self.srv.url + SAS, timeout=60,
                               json={"name": name, "active": True})
                except requests.RequestException:
                    time.sleep(0.5)
                    continue
                if r.status_code in (200, 409):
                    return name
                time.sleep(0.5)
            raise RuntimeError("cannot create %s: %s %s"
                               % (name, r.status_code, r.text[:200]))

        t = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(self.args.workers) as ex:
            for name in ex.map(one, todo):
                self.names.add(name)
        dt = time.perf_counter() - t
        self.created = n
        self.create_s += dt
        return dt, len(todo)

    # -- cache control ------------------------------------------------------

    def wait_expired(self):
        """Until everything the daemon cached is older than meta_ttl."""
        left = self.expire_at - time.monotonic()
        if left > 0:
            time.sleep(left)

    def touched(self):
        """The daemon just fetched something: it is fresh until then."""
        self.expire_at = time.monotonic() + self.ttl + 0.3

    # -- one step ------------------------------------------------------------

    def zen(self, fn):
        """Run fn (a timed zenmlfs step), counting its requests."""
        before = self.proxy.method_counts
        dt = fn()
        after = self.proxy.method_counts
        return dt, diff_counts(before, after)

    def step(self, n, name, zfn, bfn, prep=None, cold=False, goal=None,
             after=None):
        """Alternated repeats of zfn (zenmlfs) and bfn (baseline); prep
        runs (untimed) before each zfn; cold: the cache expires first."""
        zt, bt, reqs, mems = [], [], [], []
        for i in range(self.args.repeats):
            def z():
                if prep:
                    prep()
                dt, c = self.zen(zfn)
                self.touched()
                mems.append(self.mnt.mem())
                zt.append(dt)
                reqs.append(c)

            def b():
                bt.append(bfn())

            if cold:
                self.wait_expired()
            if i % 2:
                b(), z()
            else:
                z(), b()
            if after:
                after()
        ratios = sorted(z / b for z, b in zip(zt, bt))
        med = statistics.median(ratios)
        nreq = sorted(sum(c.values()) for c in reqs)
        m = mems[-1]
        self.step_peak = max(x["anon"] for x in mems)
        verdict = ""
        if goal:
            verdict = "%s %s" % ("<=%.1fx" % goal,
                                 "met" if med <= goal else "NOT met")
        print("%-36s %9s %9s  %5.2f %5.2f %5.2f  %-13s %5s  %s  %s"
              % (name, fmt_s(statistics.median(zt)),
                 fmt_s(statistics.median(bt)), ratios[0], med, ratios[-1],
                 verdict,
                 "%d" % nreq[0] if nreq[0] == nreq[-1]
                 else "%d-%d" % (nreq[0], nreq[-1]),
                 fmt_mem(m), fmt_counts(reqs[-1], self.names)),
              flush=True)
        self.rows.append((n, name, med, goal))
        return m

    # -- the steps at one N ---------------------------------------------------

    def at_size(self, n):
        log("creating service accounts up to %d ..." % n)
        dt, made = self.create_accounts(n)
        sadir = self.mnt.join("service-accounts")
        listurl = self.proxy.url + SAS + LIST_QUERY
        size = int(subprocess.run(
            self.curl + ["-w", "%{size_download}", listurl],
            capture_output=True, text=True, check=True).stdout)
        self.wire = size
        total = n
        print()
        print("N = %d service accounts (2 of them the targets); created "
              "%d more in "
              "%.1f s (%.0f/s, %d threads; all %d: %.1f s); hydrated list: "
              "%.2f MiB on the wire"
              % (n, made, dt, made / dt if dt else 0, self.args.workers, n,
                 self.create_s, size / MIB))
        print("%-36s %9s %9s  %-17s  %-13s %5s  %s  %s"
              % ("step", "zenmlfs", "baseline", "ratio min/med/max",
                 "goal", "req", "anon  priv   rss (MiB)",
                 "requests of the last run"))
        print("-" * 150)
        curl_list = lambda: run(self.curl + [listurl])  # noqa: E731
        big = n == max(self.args.sizes)

        def check_ls():
            got = len(os.listdir(sadir))
            if got != total:
                raise RuntimeError("ls shows %d entries, expected %d"
                                   % (got, total))
        check_ls()
        self.touched()
        for label, cmd, cwd in (
                ("ls", ["ls", sadir], None),
                ("ls -l", ["ls", "-l", sadir], None),
                ("cat */id", ["sh", "-c", "cat */id"], sadir)):
            goal = READ_GOALS[label] if big else None
            self.step(n, label + " (cache expired)",
                      lambda: run(cmd, cwd), curl_list, cold=True,
                      goal=goal)
            if label == "ls -l" and big:
                self.walk_memory(cmd, self.step_peak)
            self.step(n, label + " (warm)", lambda: run(cmd, cwd),
                      curl_list, prep=lambda: run(cmd, cwd))

        # Writes: zenmlfs acts on target-z, curl on target-c.
        zn, _, _ = self.target["z"]
        _, cid, ckid = self.target["c"]
        zkey = os.path.join(sadir, zn, "keys", "k")
        flip = {"v": 0}

        def val():
            return str(flip["v"])

        def flipped():
            flip["v"] ^= 1

        def echo(path, v):
            return lambda: run(["sh", "-c", "echo %s > '%s'" % (v(), path)])

        def put(url, body):
            return lambda: run(self.curl_json + ["-X", "PUT", "-d", body(),
                                                 self.proxy.url + url])

        keyurl = "%s/%s/api_keys/%s" % (SAS, cid, ckid)
        for label, zfn, bfn, warm in (
                ("echo 0|1 > keys/k/active",
                 echo(os.path.join(zkey, "active"), val),
                 put(keyurl, lambda: '{"active": %s}'
                     % ("true" if flip["v"] else "false")),
                 lambda: run(["cat", os.path.join(zkey, "active")])),
                ("echo 0|1 > active",
                 echo(os.path.join(sadir, zn, "active"), val),
                 put("%s/%s" % (SAS, cid), lambda: '{"active": %s}'
                     % ("true" if flip["v"] else "false")),
                 lambda: run(["cat", os.path.join(sadir, zn, "active")])),
                ("echo 60 > rotate",
                 echo(os.path.join(zkey, "rotate"), lambda: "60"),
                 put(keyurl + "/rotate",
                     lambda: '{"retain_period_minutes": 60}'),
                 lambda: run(["cat", os.path.join(zkey, "id")]))):
            for cold in (False, True):
                self.step(n, "%s (%s)" % (label, "expired" if cold
                                          else "warm"),
                          zfn, bfn, prep=None if cold else warm, cold=cold,
                          goal=WRITE_GOAL, after=flipped)
            # leave both targets active
            self.srv.api("PUT", "%s/%s/api_keys/%s" % (SAS, cid, ckid),
                         json={"active": True})
            self.srv.api("PUT", "%s/%s" % (SAS, cid), json={"active": True})
            zsa = self.srv.api("GET", SAS + "/" + zn).json()
            self.srv.api("PUT", "%s/%s/api_keys/k" % (SAS, zsa["id"]),
                         json={"active": True})
            self.srv.api("PUT", "%s/%s" % (SAS, zsa["id"]),
                         json={"active": True})

        newname = {}

        def mk():
            nm = "new-%s" % secrets.token_hex(5)
            newname["z"] = nm
            self.names.add(nm)
            return run(["mkdir", os.path.join(sadir, nm)])

        def post():
            nm = "new-%s" % secrets.token_hex(5)
            newname["c"] = nm
            self.names.add(nm)
            return run(self.curl_json + [
                "-X", "POST", "-d",
                '{"name": "%s", "full_name": "", "active": true}' % nm,
                self.proxy.url + SAS])

        def cleanup_new():
            for k in ("z", "c"):
                nm = newname.pop(k, None)
                if nm:
                    self.srv.api("DELETE", SAS + "/" + nm)

        for cold in (False, True):
            self.step(n, "mkdir (%s)" % ("expired" if cold else "warm"),
                      mk, post, prep=None if cold
                      else lambda: run(["ls", sadir]),
                      cold=cold, goal=WRITE_GOAL, after=cleanup_new)

    # -- memory --------------------------------------------------------------

    def walk_memory(self, cmd, step_peak):
        """Memory goals: right after one more `ls -l` of the largest
        listing (cache expired), and how soon it is back near idle."""
        idle = self.mem_idle
        self.wait_expired()
        run(cmd)
        after_walk = self.mnt.mem()
        grew = after_walk["anon"] - idle["anon"]
        t0 = time.monotonic()
        back = None
        samples = []
        while time.monotonic() - t0 < 2 * self.ttl + 2:
            m = self.mnt.mem()
            samples.append((time.monotonic() - t0, m["anon"]))
            if back is None and m["anon"] - idle["anon"] <= 1024 * 1024:
                back = time.monotonic() - t0
            time.sleep(0.25)
        self.mem_notes.append(
            "after `ls -l` of %d accounts: anon %.2f MiB, %.2f MiB above "
            "idle = %.2fx the list's wire size (%.2f MiB); goal <= 3x: %s"
            "; the largest after the %d runs above: %.2f MiB above idle "
            "(%.2fx)"
            % (self.created, after_walk["anon"] / MIB, grew / MIB,
               grew / self.wire, self.wire / MIB,
               "met" if grew <= 3 * self.wire else "NOT met",
               self.args.repeats, (step_peak - idle["anon"]) / MIB,
               (step_peak - idle["anon"]) / self.wire))
        self.mem_notes.append(
            "back within 1 MiB of idle: %s (goal: within 2*meta_ttl = %d s"
            "): %s; anon at +%.0f s: %.2f MiB"
            % ("after %.1f s" % back if back is not None else "not within "
               "%.0f s" % (2 * self.ttl + 2), 2 * self.ttl,
               "met" if back is not None and back <= 2 * self.ttl
               else "NOT met", samples[-1][0], samples[-1][1] / MIB))
        self.touched()

    def refreshes(self, count):
        """Memory over count writes to refresh."""
        path = self.mnt.join("refresh")
        marks = sorted({min(count, x) for x in
                        (count // 10, count // 2, count)})
        out = []
        t = time.perf_counter()
        for i in range(1, count + 1):
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, b"1\n")
            finally:
                os.close(fd)
            if i in marks:
                out.append((i, self.mnt.mem()))
        dt = time.perf_counter() - t
        return dt, out

    # -- idle and reading mounts ---------------------------------------------

    def idle_and_reading(self, secs, lifetime, check):
        """Requests of an idle mount and of one whose token is read."""
        res = {}

        def one(what):
            p = FaultProxy("127.0.0.1", self.srv.port).start()
            m = Mount(self.work, p.url, "token_lifetime=%d,check_interval=%d"
                      % (lifetime, check), tag="mnt-" + what)
            try:
                time.sleep(1)
                st0 = m.status()
                p.reset_counts()
                stop = threading.Event()
                reader = None
                reads = [0]
                if what == "reading":
                    def loop():
                        path = m.join("token")
                        while not stop.is_set():
                            with open(path, "rb") as f:
                                f.read()
                            reads[0] += 1
                            time.sleep(0.05)
                    reader = threading.Thread(target=loop, daemon=True)
                    reader.start()
                time.sleep(secs)
                stop.set()
                if reader:
                    reader.join(5)
                counts = p.counts
                st1 = m.status()
                # the status reads above are not requests
                res[what] = (counts, int(st1["refreshes"]) -
                             int(st0["refreshes"]),
                             int(st1.get("credential_checks", 0)) -
                             int(st0.get("credential_checks", 0)),
                             reads[0], m.mem())
            finally:
                m.umount()
                p.stop()

        # Side by side, each through a proxy of its own.
        ts = [threading.Thread(target=one, args=(w,))
              for w in ("idle", "reading")]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=None,
                    help="numbers of service accounts (default "
                    "100,1000,10000; --quick: 100,1000)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="alternated repeats per step (default 5; "
                    "--quick: 3)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer repeats, sizes, refreshes, idle seconds")
    ap.add_argument("--meta-ttl", type=int, default=5,
                    help="the mount's meta_ttl (default 5, the daemon's)")
    ap.add_argument("--workers", type=int, default=4,
                    help="threads creating accounts (default 4: more only "
                    "slow the server down)")
    ap.add_argument("--refreshes", type=int, default=None,
                    help="writes to refresh for the memory check "
                    "(default 10000; --quick: 1000)")
    ap.add_argument("--idle", type=int, default=None,
                    help="seconds of the idle and reading mounts "
                    "(default 120; --quick: 30)")
    args = ap.parse_args()
    q = args.quick
    args.sizes = sorted(int(x) for x in
                        (args.sizes or ("100,1000" if q else
                                        "100,1000,10000")).split(","))
    args.repeats = args.repeats or (3 if q else 5)
    args.refreshes = args.refreshes or (1000 if q else 10000)
    args.idle = args.idle or (30 if q else 120)
    if not os.access(ZENMLFS_BIN, os.X_OK):
        sys.exit("no %s: build first (scripts/test or scripts/up)"
                 % ZENMLFS_BIN)
    for tool in ("curl", "fusermount3"):
        if not shutil.which(tool):
            sys.exit("%s is needed" % tool)

    work = tempfile.mkdtemp(prefix="zenmlfs-bench-scale-", dir="/tmp")
    os.chmod(work, 0o755)
    b = Bench(args, work)
    t_all = time.monotonic()
    try:
        b.start()
        print("zenmlfs scale benchmark: sizes %s, %d alternated repeats, "
              "meta_ttl=%d, %d cores"
              % (",".join(map(str, args.sizes)), args.repeats, b.ttl,
                 os.cpu_count()))
        print("ratio = zenmlfs / baseline (curl through the same proxy); "
              "req = requests zenmlfs sent per run; memory of the daemon "
              "after the step")
        print("idle mount: anon %.2f MiB, private %.2f MiB, VmRSS %.2f MiB"
              " (goal: anon <= 4 MiB: %s)"
              % (b.mem_idle["anon"] / MIB, b.mem_idle["priv"] / MIB,
                 b.mem_idle["rss"] / MIB,
                 "met" if b.mem_idle["anon"] <= 4 * 1024 * 1024
                 else "NOT met"))
        for n in args.sizes:
            b.at_size(n)

        print()
        print("memory")
        print("-" * 70)
        for note in b.mem_notes:
            print(note)
        log("%d refreshes ..." % args.refreshes)
        m0 = b.mnt.mem()
        dt, marks = b.refreshes(args.refreshes)
        print("%d writes to refresh in %.1f s (%.1f ms each): anon before "
              "%.2f MiB, %s" % (args.refreshes, dt,
                                dt / args.refreshes * 1e3, m0["anon"] / MIB,
                                ", ".join("after %d %.2f MiB" %
                                          (i, m["anon"] / MIB)
                                          for i, m in marks)))
        growth = marks[-1][1]["anon"] - marks[0][1]["anon"]
        print("growth from %d to %d refreshes: %+.0f KiB (goal: none; "
              "<= 64 KiB counted as none: %s)"
              % (marks[0][0], marks[-1][0], growth / 1024,
                 "met" if growth <= 64 * 1024 else "NOT met"))

        lifetime, check = 60, 5
        log("idle and reading mounts, %d s ..." % args.idle)
        res = b.idle_and_reading(args.idle, lifetime, check)
        print()
        print("requests per hour (mounts with token_lifetime=%d, "
              "check_interval=%d, over %d s each)" % (lifetime, check,
                                                       args.idle))
        print("-" * 70)
        per_h = 3600.0 / args.idle
        for what in ("idle", "reading"):
            counts, refr, checks, reads, m = res[what]
            total = sum(counts.values())
            tok = counts.get("/api/v1/api_token", 0)
            cu = counts.get("/api/v1/current-user", 0)
            other = total - tok - cu
            line = ("%-8s %3d requests = %.0f/h: api_token %d (refreshes "
                    "%d), current-user %d (checks %d), other %d"
                    % (what, total, total * per_h, tok, refr, cu, checks,
                       other))
            if what == "reading":
                line += "; %d reads of token" % reads
            else:
                line += "  (goal: refreshes only: %s)" % (
                    "met" if total == tok == refr else "NOT met")
            print(line)
        # What the defaults give: refresh when a third (+ up to a twelfth
        # of jitter) of the lifetime is left; a check per check_interval
        # (+ up to a fifth) while read.
        d_life, d_check = 3600, 60
        refresh_h = 3600.0 / (d_life - d_life / 3.0 - d_life / 24.0)
        print("at the defaults (token_lifetime=%d, check_interval=%d): "
              "idle %.1f/h (refreshes only), reading <= %.1f/h "
              "(+ %.0f checks)" % (d_life, d_check, refresh_h,
                                   refresh_h + 3600.0 / d_check,
                                   3600.0 / d_check))

        print()
        print("goals")
        print("-" * 70)
        big = max(args.sizes)
        for n, name, med, goal in b.rows:
            if goal is None:
                continue
            if n != big and name.split(" (")[0] in READ_GOALS:
                continue
            print("N=%-6d %-36s %5.2fx  goal <= %.1fx  %s"
                  % (n, name, med, goal, "met" if med <= goal
                     else "NOT met"))
        print()
        print("all requests by path:",
              fmt_counts(b.proxy.method_counts, b.names))
        print("total time %.0f s" % (time.monotonic() - t_all))
    finally:
        b.stop()
        if b.mnt is None or not is_mounted(b.mnt.path):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
