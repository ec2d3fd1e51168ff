#!/usr/bin/env python3
"""Benchmark: does a fleet that starts, restarts and loses its server
together come back, and what does it cost the server?  (docs/design.md,
Fleet.)

One real ZenML server (tests/zenserver.py) behind the counting proxy
(tests/proxy.py, which stands for the load balancer in front of a server),
one service account and API key shared by N nodes, as a DaemonSet's
Secret would be.  Each node is `zenmlfs -f` with its own mount point and
state directory, started like the shipped unit: NOTIFY_SOCKET set (so the
default start_delay applies, and the node is serving when it sends
READY=1), restarted 5 s after a failure exit (Restart=on-failure,
RestartSec=5s, RestartPreventExitStatus=1 2 4 5).

Phases, each against a baseline measured in the same run:

  curl     N shells at once, each doing by hand what a node does to serve
           a token (POST /api/v1/login with the key, GET /api/v1/api_token
           with the session): the baseline of the boot storm
  boot     N nodes started at once with empty state directories: time
           until every node sent READY=1, server CPU-seconds (utime+stime
           of the server process, /proc), logins, restarts
  restart  all N stopped (SIGTERM), then started again at once: their kept
           sessions are still good, so no login: CPU-s per node, time
           until every node is serving again
  steady   --window s (several refresh periods) with half the nodes
           idle and the other half each with a reader (open, read, close
           the token every second), in the same window so that both halves
           have the same refresh phases: each node's requests by kind (its
           metrics file), per node per hour, and the ratio of the two
  outage   the proxy answers 503 to everything for --outage s (a server
           down behind its load balancer): requests per node during it
           (refreshes, probes), then the time until every node serves a
           valid token again and the arrivals per second after the return

Memory per daemon (Anonymous of /proc/PID/smaps_rollup) after boot and at
the end.  Tokens live --lifetime s (default 300, so that refreshes, expiry
and probes all happen within the run).

Run as root (FUSE mounts), after scripts/test or scripts/up built
everything:
    .venv/bin/python bench/bench_fleet.py [--nodes 100] [--window 600]
                                          [--outage 300] [--lifetime 300]
"""

import argparse
import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

from proxy import FaultProxy  # noqa: E402
from zenserver import ServiceAccount, ZenServer, jwt_claims  # noqa: E402

ZENMLFS_BIN = os.environ.get("ZENMLFS_BIN",
                             os.path.join(REPO, "build", "zenmlfs"))
RESTART_SEC = 5.0
NO_RESTART = (0, 1, 2, 4, 5)  # exit codes the unit does not restart on
LOGIN = "/api/v1/login"
TICK = os.sysconf("SC_CLK_TCK")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cpu_s(pid):
    """utime + stime of a process, every thread included."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICK


def anon_kib(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def write_secret(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def route(path):
    """A request's route, without its query and object ids."""
    p = path.split("?", 1)[0]
    return p


class Node:
    """One zenmlfs daemon run like the unit runs it."""

    def __init__(self, i, root, url, key, lifetime):
        self.i = i
        self.dir = os.path.join(root, "n%03d" % i)
        self.mnt = os.path.join(self.dir, "mnt")
        self.state = os.path.join(self.dir, "state")
        os.makedirs(self.mnt)
        os.makedirs(self.state, 0o700)
        self.kf = os.path.join(self.dir, "api-key")
        write_secret(self.kf, key + "\n")
        self.url = url
        self.lifetime = lifetime
        self.log = os.path.join(self.dir, "zenmlfs.log")
        self.sock_path = os.path.join(self.dir, "notify")
        self.proc = None
        self.ready_at = None
        self.started_at = None
        self.restarts = 0
        self.exits = []
        self._stop = False
        self._ready = threading.Event()
        self._thread = None

    def _spawn(self):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": self.dir, "NOTIFY_SOCKET": self.sock_path}
        cmd = [ZENMLFS_BIN, "-f", "--log", self.log, "--url", self.url,
               "--api-key-file", self.kf, "-o",
               "state_dir=%s,token_lifetime=%d" % (self.state, self.lifetime),
               self.mnt]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def start(self, t0):
        """Start now; a thread waits for READY=1 and restarts the daemon
        as the unit would."""
        self.started_at = t0
        self.ready_at = None
        self._ready.clear()
        self._stop = False
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.sock.settimeout(0.5)
        self._spawn()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        while not self._stop:
            try:
                msg = self.sock.recv(4096).decode(errors="replace")
                if "READY=1" in msg.split("\n") and self.ready_at is None:
                    self.ready_at = time.monotonic()
                    self._ready.set()
                continue
            except socket.timeout:
                pass
            rc = self.proc.poll()
            if rc is None or self._stop:
                continue
            self.exits.append(rc)
            if rc in NO_RESTART:
                self._ready.set()
                return
            t = time.monotonic() + RESTART_SEC
            while time.monotonic() < t and not self._stop:
                time.sleep(0.2)
            if not self._stop:
                self.restarts += 1
                self._spawn()

    def wait_ready(self, deadline):
        self._ready.wait(max(0.0, deadline - time.monotonic()))
        return self.ready_at is not None

    def stop(self):
        self._stop = True
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._thread:
            self._thread.join(5)
        self.sock.close()
        subprocess.run(["fusermount3", "-u", "-q", "-z", self.mnt],
                       stderr=subprocess.DEVNULL)

    def requests(self):
        """{kind: requests} from the node's metrics file."""
        out = {}
        try:
            with open(os.path.join(self.mnt, "metrics")) as f:
                for line in f:
                    m = re.match(r'zenmlfs_requests_total\{kind="(\w+)"\} '
                                 r'(\d+)', line)
                    if m:
                        out[m.group(1)] = int(m.group(2))
        except OSError:
            pass
        return out

    def token(self):
        try:
            with open(os.path.join(self.mnt, "token")) as f:
                return f.read().strip()
        except OSError:
            return None


class Fleet:
    def __init__(self, args):
        self.args = args
        self.root = tempfile.mkdtemp(prefix="zenmlfs-fleet-")
        self.server = ZenServer(os.path.join(self.root, "server"))
        self.proxy = None
        self.nodes = []

    def setup(self):
        log("starting the server")
        self.server.start()
        self.sa = ServiceAccount(self.server, name="fleet")
        self.proxy = FaultProxy("127.0.0.1", self.server.port,
                                hang_limit=600.0).start()
        self.url = self.proxy.url
        self.nodes = [Node(i, self.root, self.url, self.sa.key,
                           self.args.lifetime)
                      for i in range(self.args.nodes)]

    def cleanup(self):
        for n in self.nodes:
            try:
                n.stop()
            except Exception as e:  # noqa: BLE001
                log("node %d: %s" % (n.i, e))
        if self.proxy:
            self.proxy.stop()
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def cpu(self):
        return cpu_s(self.server.proc.pid)

    # ------------------------------------------------------------ phases

    def curl_baseline(self):
        """Each of N shells logs in and mints a token, all at once."""
        d = os.path.join(self.root, "curl")
        os.makedirs(d)
        body = os.path.join(d, "body")
        write_secret(body, "grant_type=zenml-api-key&password=%s" %
                     self.sa.key)
        script = (
            'sess=$(curl -sf -X POST "$U%s" -d @"$B" | '
            'sed -n \'s/.*"access_token": *"\\([^"]*\\)".*/\\1/p\')\n'
            '[ -n "$sess" ] || exit 1\n'
            'printf "Authorization: Bearer %%s\\n" "$sess" > "$H"\n'
            'curl -sf -H @"$H" "$U/api/v1/api_token?token_type=generic'
            '&expires_in=$L" > "$T"\n' % LOGIN)
        self.proxy.reset_counts()
        cpu0 = self.cpu()
        t0 = time.monotonic()
        procs = []
        for i in range(self.args.nodes):
            env = {"PATH": os.environ["PATH"], "U": self.url, "B": body,
                   "H": os.path.join(d, "h%d" % i),
                   "T": os.path.join(d, "t%d" % i),
                   "L": str(self.args.lifetime)}
            procs.append(subprocess.Popen(["sh", "-c", script], env=env))
        rcs = [p.wait() for p in procs]
        took = time.monotonic() - t0
        cpu = self.cpu() - cpu0
        ok = sum(1 for i, rc in enumerate(rcs) if rc == 0 and os.path.getsize(
            os.path.join(d, "t%d" % i)) > 0)
        log("curl: %d of %d got a token in %.1f s, server CPU %.1f s, "
            "logins %d" % (ok, len(rcs), took, cpu, self.proxy.count(LOGIN)))
        return {"time": took, "cpu": cpu, "ok": ok,
                "logins": self.proxy.count(LOGIN)}

    def start_all(self, deadline_s):
        self.proxy.reset_counts()
        cpu0 = self.cpu()
        t0 = time.monotonic()
        for n in self.nodes:
            n.start(t0)
        deadline = t0 + deadline_s
        ready = [n.wait_ready(deadline) for n in self.nodes]
        ends = [n.ready_at - t0 for n in self.nodes if n.ready_at]
        took = max(ends) if all(ready) else float("inf")
        cpu = self.cpu() - cpu0
        arrivals = collections.Counter(int(e) for e in ends)
        r = {"time": took, "cpu": cpu, "ready": sum(ready),
             "logins": self.proxy.count(LOGIN),
             "restarts": sum(n.restarts for n in self.nodes),
             "exits": sum(len(n.exits) for n in self.nodes),
             "median": sorted(ends)[len(ends) // 2] if ends else None,
             "arrivals": arrivals}
        return r

    def stop_all(self):
        threads = [threading.Thread(target=n.stop) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def steady(self, seconds):
        """Half the nodes idle, the other half with a reader each (open,
        read, close the token every second), in the same window, so that
        both halves have the same refresh phases.  Each node's requests
        by kind come from its own metrics file."""
        stop = threading.Event()
        reads = [0]
        readers = self.nodes[1::2]
        idle = self.nodes[0::2]

        def reader(n):
            while not stop.is_set():
                if n.token():
                    reads[0] += 1
                stop.wait(1.0)

        before = {n.i: n.requests() for n in self.nodes}
        ts = [threading.Thread(target=reader, args=(n,), daemon=True)
              for n in readers]
        for t in ts:
            t.start()
        stop.wait(seconds)
        stop.set()
        for t in ts:
            t.join()

        def group(nodes):
            c = collections.Counter()
            for n in nodes:
                after = n.requests()
                for k, v in after.items():
                    c[k] += v - before[n.i].get(k, 0)
            return per_hour(c, seconds, len(nodes))

        return group(idle), group(readers), reads[0]

    def outage(self, seconds, recover_s):
        """The proxy answers 503 for `seconds`; then, how long until every
        node serves a token that is valid, and when the requests come."""
        times = []
        lock = threading.Lock()
        orig = self.proxy._begin

        def begin(method, path):
            with lock:
                times.append((time.monotonic(), method, route(path)))
            return orig(method, path)

        self.proxy._begin = begin
        self.proxy.reset_counts()
        t0 = time.monotonic()
        self.proxy.set_mode("status", status=503)
        time.sleep(seconds)
        self.proxy.set_mode("pass")
        back = time.monotonic()
        during = [t for t in times if t[0] < back]
        # serving: every node's token is readable and not expired
        serving_at = {}
        deadline = back + recover_s
        while time.monotonic() < deadline and \
                len(serving_at) < len(self.nodes):
            now = time.time()
            for n in self.nodes:
                if n.i in serving_at:
                    continue
                tok = n.token()
                if tok and jwt_claims(tok).get("exp", 0) > now:
                    serving_at[n.i] = time.monotonic() - back
            time.sleep(0.2)
        self.proxy._begin = orig
        after = [t for t in times if t[0] >= back]
        per_s = collections.Counter(int(t[0] - back) for t in after
                                    if t[0] - back < 30)
        by_route = collections.Counter("%s %s" % (m, p)
                                       for _, m, p in during)
        return {"during": len(during), "seconds": back - t0,
                "by_route": by_route, "serving": len(serving_at),
                "recover": max(serving_at.values()) if
                len(serving_at) == len(self.nodes) else float("inf"),
                "per_s": per_s}


def per_hour(counts, seconds, nodes):
    return {k: v * 3600.0 / seconds / nodes for k, v in counts.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--window", type=float, default=600,
                    help="seconds of the steady-state measure (several "
                    "refresh periods)")
    ap.add_argument("--outage", type=float, default=300)
    ap.add_argument("--lifetime", type=int, default=300)
    ap.add_argument("--skip", default="",
                    help="phases to skip: curl,steady,outage")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if os.geteuid() != 0:
        sys.exit("bench_fleet: run as root (it mounts)")
    f = Fleet(args)
    res = {}
    try:
        f.setup()
        N = args.nodes
        if "curl" not in skip:
            res["curl"] = f.curl_baseline()
        log("boot: %d nodes at once" % N)
        b = res["boot"] = f.start_all(600)
        log("boot: %d of %d serving in %.1f s (median %.1f s), server CPU "
            "%.1f s, logins %d, restarts %d"
            % (b["ready"], N, b["time"], b["median"] or -1, b["cpu"],
               b["logins"], b["restarts"]))
        mem = [anon_kib(n.proc.pid) for n in f.nodes]
        res["mem_boot"] = sum(mem) / len(mem)
        log("restart: stop all, start all")
        f.stop_all()
        r = res["restart"] = f.start_all(120)
        log("restart: %d of %d serving in %.1f s, server CPU %.2f s "
            "(%.3f per node), logins %d"
            % (r["ready"], N, r["time"], r["cpu"], r["cpu"] / N,
               r["logins"]))
        if "steady" not in skip:
            log("steady state: %d s, half the nodes reading" % args.window)
            res["idle"], res["reading"], res["reads"] = f.steady(args.window)
        if "outage" not in skip:
            log("outage: %d s of 503" % args.outage)
            res["outage"] = f.outage(args.outage, 120)
        mem = [anon_kib(n.proc.pid) for n in f.nodes]
        res["mem_end"] = sum(mem) / len(mem)
    finally:
        f.cleanup()
    report(args, res)


def report(args, res):
    N = args.nodes
    print("\nzenmlfs fleet benchmark: %d nodes, token_lifetime=%d, one "
          "ZenML server, 2 cores\n" % (N, args.lifetime))
    b, r = res["boot"], res["restart"]
    c = res.get("curl")
    print("| phase | time to all serving | server CPU-s | logins | ratio "
          "to curl (time, CPU) | goal |")
    print("|---|---|---|---|---|---|")
    if c:
        print("| curl baseline | %.1f s (%d of %d) | %.1f | %d | 1, 1 | |"
              % (c["time"], c["ok"], N, c["cpu"], c["logins"]))
        print("| first boot | %.1f s (%d of %d) | %.1f | %d | %.2f, %.2f | "
              "<= 1.3, <= 1.1 |"
              % (b["time"], b["ready"], N, b["cpu"], b["logins"],
                 b["time"] / c["time"], b["cpu"] / c["cpu"]))
    else:
        print("| first boot | %.1f s | %.1f | %d | | |"
              % (b["time"], b["cpu"], b["logins"]))
    print("| restart, sessions kept | %.1f s (%d of %d) | %.2f (%.3f per "
          "node) | %d | | <= 10 s, <= 0.05 per node |"
          % (r["time"], r["ready"], N, r["cpu"], r["cpu"] / N,
             r["logins"]))
    print("\nboot: restarts by the supervisor %d; nodes serving per second "
          "since the start: %s" % (b["restarts"], dict(sorted(
              b["arrivals"].items()))))
    print("memory per daemon (Anonymous): %.0f KiB after boot, %.0f KiB at "
          "the end" % (res["mem_boot"], res.get("mem_end", 0)))
    idle, reading = res.get("idle"), res.get("reading")
    if idle is not None:
        ti = sum(idle.values())
        print("\nrequests per node per hour by kind (window %d s; half the "
              "nodes idle, half reading, from their metrics files):"
              % args.window)
        print("| kind | idle | reading |")
        print("|---|---|---|")
        for k in sorted(set(idle) | set(reading or {})):
            print("| %s | %.1f | %.1f |" % (k, idle.get(k, 0),
                                            (reading or {}).get(k, 0)))
        if reading is not None:
            tr = sum(reading.values())
            print("| total | %.1f | %.1f (%.2fx idle; goal <= 2x) |"
                  % (ti, tr, tr / ti if ti else float("nan")))
            print("reads of the token during the reading window: %d"
                  % res["reads"])
    o = res.get("outage")
    if o:
        print("\noutage of %.0f s (503 from the proxy): %d requests, %.2f "
              "per node, one per %.0f s per node (goal: one per 30 s or "
              "fewer)" % (o["seconds"], o["during"], o["during"] / N,
                          o["seconds"] * N / o["during"] if o["during"]
                          else float("inf")))
        print("during the outage, by route: %s" % dict(o["by_route"]))
        print("after the return: %d of %d nodes serving a valid token, the "
              "last %.1f s after it (goal <= 15 s)"
              % (o["serving"], N, o["recover"]))
        print("requests per second after the return (s: n): %s"
              % dict(sorted(o["per_s"].items())))


if __name__ == "__main__":
    main()
