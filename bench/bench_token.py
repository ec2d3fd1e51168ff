#!/usr/bin/env python3
"""Benchmark: how fast is `cat /zen/token`, and what does it cost the server?

Starts a real ZenML server (tests/zenserver.py), a service account with an
API key, the fault proxy (tests/proxy.py, used here only to count server
requests) and zenmlfs mounted through it, then measures in one run:

  1. open+read+close of MNT/token vs the same bytes in a file on tmpfs
     (/dev/shm): a small C loop compiled at run time (python os.* loops as
     well, for reference).  Goal: zenmlfs <= 2x tmpfs.
  2. a fresh token from the ZenML Python client in a new process
     (the `zenml` CLI has no command that prints a token in 0.98.0; this is
     what a script would do: Client().zen_store.get_api_token(...) with
     ZENML_STORE_URL + ZENML_STORE_API_KEY set).
  3. one `curl` GET /api/v1/api_token with a bearer token.
  4. server requests made by zenmlfs during 100,000 reads of token.
     Goal: no more than the refreshes it did meanwhile.

Run (after scripts/test or scripts/up built everything):
    .venv/bin/python bench/bench_token.py [--reads N] [--lifetime S]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import bench_mount, clean_env

C_LOOP = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* open+read+close PATH N times; print ns per iteration and bytes read */
int main(int argc, char **argv)
{
	char buf[65536];
	long n = atol(argv[2]), i;
	ssize_t got = 0;
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (i = 0; i < n; i++) {
		int fd = open(argv[1], O_RDONLY);
		if (fd < 0) {
			perror("open");
			return 1;
		}
		got = read(fd, buf, sizeof(buf));
		if (got <= 0) {
			perror("read");
			return 1;
		}
		close(fd);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f %zd\n", ((b.tv_sec - a.tv_sec) * 1e9 +
	       (b.tv_nsec - a.tv_nsec)) / n, got);
	return 0;
}
"""


def compile_loop(workdir):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    src = os.path.join(workdir, "loop.c")
    exe = os.path.join(workdir, "loop")
    with open(src, "w") as f:
        f.write(C_LOOP)
    r = subprocess.run([cc, "-O2", "-o", exe, src], capture_output=True)
    return exe if r.returncode == 0 else None


def c_loop(exe, path, n):
    out = subprocess.run([exe, path, str(n)], check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]) / 1000.0   # µs


def py_loop(path, n):
    o, r, c = os.open, os.read, os.close
    flags = os.O_RDONLY
    t = time.perf_counter()
    for _ in range(n):
        fd = o(path, flags)
        r(fd, 65536)
        c(fd)
    return (time.perf_counter() - t) / n * 1e6


def best_of(fn, repeat=3):
    return min(fn() for _ in range(repeat))


def median_time(cmd, env, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise RuntimeError("%s failed: %s" % (cmd[0], r.stderr[-2000:]))
    return statistics.median(times) * 1e6


def status(mnt):
    d = {}
    with open(os.path.join(mnt, "status")) as f:
        for line in f:
            k, _, v = line.partition(":")
            d[k.strip()] = v.strip()
    return d


def fmt_us(us):
    if us >= 1e6:
        return "%.2f s" % (us / 1e6)
    if us >= 1e3:
        return "%.1f ms" % (us / 1e3)
    return "%.2f µs" % us


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reads", type=int, default=100000)
    ap.add_argument("--lifetime", type=int, default=3600,
                    help="token_lifetime for the mount (s)")
    ap.add_argument("--cli-runs", type=int, default=5)
    ap.add_argument("--curl-runs", type=int, default=20)
    args = ap.parse_args()

    with bench_mount("zenmlfs-bench", proxy=True,
                     opts="token_lifetime=%d" % args.lifetime) as b:
        run(args, b)


def run(args, b):
    """Everything measured, on the mount of Bench b."""
    srv, sa, proxy, mnt, work = b.srv, b.sa, b.proxy, b.mnt, b.work
    token_path = os.path.join(mnt, "token")
    with open(token_path, "rb") as f:
        token = f.read()
    shm_dir = tempfile.mkdtemp(prefix="zenmlfs-bench-", dir="/dev/shm")
    shm_path = os.path.join(shm_dir, "token")
    with open(shm_path, "wb") as f:
        f.write(token)
    exe = compile_loop(work)
    n = args.reads

    # 4. server requests during n reads (counted first, on a quiet
    # mount; the C loop does the reads).
    time.sleep(1)
    st0 = status(mnt)
    req0 = proxy.count("")
    tok0 = proxy.count("/api/v1/api_token")
    if exe:
        c_loop(exe, token_path, n)
    else:
        py_loop(token_path, n)
    req1 = proxy.count("")
    tok1 = proxy.count("/api/v1/api_token")
    st1 = status(mnt)
    refreshes = int(st1.get("refreshes", 0)) - int(st0.get("refreshes", 0))

    # 1. open+read+close
    rows = []
    if exe:
        fuse_c = best_of(lambda: c_loop(exe, token_path, n))
        shm_c = best_of(lambda: c_loop(exe, shm_path, n))
    fuse_py = best_of(lambda: py_loop(token_path, n // 2))
    shm_py = best_of(lambda: py_loop(shm_path, n // 2))
    base = shm_c if exe else shm_py

    # 2. Python client in a new process
    cfg = os.path.join(work, "client-cfg")
    env = clean_env({"ZENML_STORE_URL": srv.url,
                     "ZENML_STORE_API_KEY": sa.key,
                     "ZENML_CONFIG_PATH": cfg,
                     "ZENML_ANALYTICS_OPT_IN": "false",
                     "ZENML_LOGGING_VERBOSITY": "ERROR"})
    code = ("from zenml.client import Client\n"
            "from zenml.enums import APITokenType\n"
            "print(Client().zen_store.get_api_token("
            "token_type=APITokenType.GENERIC, expires_in=3600))")
    print("timing the Python client ...", file=sys.stderr)
    cli = median_time([sys.executable, "-c", code], env, args.cli_runs)

    # 3. curl with a bearer token (header from a 0600 file, not argv)
    session = sa.session_token()
    hdr = os.path.join(work, "auth-header")
    fd = os.open(hdr, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("Authorization: Bearer %s\n" % session)
    curl = median_time(
        ["curl", "-sf", "-o", "/dev/null", "-H", "@" + hdr,
         srv.url + "/api/v1/api_token?token_type=generic&expires_in=3600"],
        clean_env(), args.curl_runs)

    if exe:
        rows.append(("zenmlfs token (C loop)", fuse_c))
        rows.append(("tmpfs /dev/shm (C loop)", shm_c))
    rows.append(("zenmlfs token (python os.*)", fuse_py))
    rows.append(("tmpfs /dev/shm (python os.*)", shm_py))
    rows.append(("curl GET /api/v1/api_token", curl))
    rows.append(("python ZenML client, new process", cli))

    print()
    print("token: %d bytes; %d reads per loop; token_lifetime=%d"
          % (len(token), n, args.lifetime))
    print()
    print("%-36s %12s %12s" % ("open+read+close / one token",
                                "per op", "x tmpfs"))
    print("-" * 62)
    for name, us in rows:
        print("%-36s %12s %12.1f" % (name, fmt_us(us), us / base))
    print()
    ratio = (fuse_c / shm_c) if exe else (fuse_py / shm_py)
    print("zenmlfs / tmpfs: %.2fx  (goal <= 2x: %s)"
          % (ratio, "met" if ratio <= 2 else "NOT met"))
    print("curl / zenmlfs: %.0fx   python client / zenmlfs: %.0fx"
          % (curl / rows[0][1], cli / rows[0][1]))
    print()
    print("server requests during %d reads: %d (api_token: %d); "
          "refreshes meanwhile: %d  (goal: requests <= refreshes: %s)"
          % (n, req1 - req0, tok1 - tok0, refreshes,
             "met" if req1 - req0 <= refreshes else "NOT met"))
    print("all server requests by path:", proxy.counts)
    shutil.rmtree(shm_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
