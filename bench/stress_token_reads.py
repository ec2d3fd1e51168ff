#!/usr/bin/env python3
"""Stress: never parts of two tokens, in any access mode, over many refreshes.

The long version of tests/test_hardening.py::test_held_fd_and_file_bind_
never_mix (not run in CI).  Starts a real ZenML server, the fault proxy
(which rewrites every token to a genuine, server-signed one of a new
length, as the server's float "iat" does now and then) and zenmlfs through
it, then runs C readers flat out while `refresh` is written --refreshes
times:

  held     keeps one fd of token open, pread(fd, 0) in a loop: must always
           read the token it first read (never another, never a mix)
  bind     the single file token bind-mounted elsewhere, open/read/close:
           likewise the one token it first read
  fresh    open/read/close of MNT/token (--fresh of them): every read must
           be one whole token the proxy handed out

Each reader prints the number of reads and every distinct content it saw;
the script checks them against the tokens handed out and prints a verdict.

    .venv/bin/python bench/stress_token_reads.py [--refreshes 500] [--fresh 4]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

from proxy import FaultProxy  # noqa: E402
from zenserver import (ServiceAccount, ZenServer, clean_env,  # noqa: E402
                       jwt_claims, jwt_sign)

ZENMLFS_BIN = os.environ.get("ZENMLFS_BIN",
                             os.path.join(REPO, "build", "zenmlfs"))

READER = r"""
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* reader MODE PATH: MODE "held" (one fd, pread at 0) or "open"
 * (open/read/close).  Until SIGTERM; then prints "reads N errors E" and
 * every distinct content seen, one per line (hex), at most 10000. */
static volatile sig_atomic_t stop;
static void on_term(int s) { stop = 1; }

#define MAXD 10000
static char *seen[MAXD];
static size_t seenlen[MAXD];
static int nseen;

static void note(const char *b, size_t n)
{
	for (int i = nseen - 1; i >= 0 && i >= nseen - 8; i--)
		if (seenlen[i] == n && !memcmp(seen[i], b, n))
			return;
	for (int i = 0; i < nseen; i++)
		if (seenlen[i] == n && !memcmp(seen[i], b, n))
			return;
	if (nseen == MAXD)
		return;
	seen[nseen] = malloc(n);
	memcpy(seen[nseen], b, n);
	seenlen[nseen++] = n;
}

int main(int argc, char **argv)
{
	char buf[65536];
	long reads = 0, errors = 0;
	int held = !strcmp(argv[1], "held"), fd = -1;
	ssize_t n;

	signal(SIGTERM, on_term);
	if (held)
		fd = open(argv[2], O_RDONLY);
	while (!stop) {
		if (!held)
			fd = open(argv[2], O_RDONLY);
		if (fd < 0) {
			errors++;
			continue;
		}
		n = held ? pread(fd, buf, sizeof(buf), 0) :
			   read(fd, buf, sizeof(buf));
		if (!held)
			close(fd);
		if (n <= 0) {
			errors++;
			continue;
		}
		reads++;
		note(buf, n);
	}
	printf("reads %ld errors %ld\n", reads, errors);
	for (int i = 0; i < nseen; i++) {
		for (size_t j = 0; j < seenlen[i]; j++)
			printf("%02x", (unsigned char)seen[i][j]);
		printf("\n");
	}
	return 0;
}
"""


def is_mounted(path):
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--refreshes", type=int, default=500)
    ap.add_argument("--fresh", type=int, default=4)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="zenmlfs-stress-", dir="/tmp")
    os.chmod(work, 0o755)
    srv = ZenServer(os.path.join(work, "server"))
    mnt = os.path.join(work, "mnt")
    bound = os.path.join(work, "bound-token")
    os.mkdir(mnt)
    proxy = proc = None
    readers = []
    try:
        print("starting the ZenML server ...", file=sys.stderr)
        srv.start()
        sa = ServiceAccount(srv, name="zenmlfs-stress")
        proxy = FaultProxy("127.0.0.1", srv.port).start()
        n = [0]

        def rewrite(real):
            n[0] += 1
            c = jwt_claims(real)
            c["pad"] = "p" * ((n[0] * 53) % 241)
            return jwt_sign(c, srv.jwt_secret)
        proxy.rewrite_token = rewrite
        keyfile = os.path.join(work, "api-key")
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(sa.key + "\n")
        proc = subprocess.Popen(
            [ZENMLFS_BIN, "-f", "--log", os.path.join(work, "zenmlfs.log"),
             "--url", proxy.url, "--api-key-file", keyfile,
             "-o", "token_lifetime=3600", mnt],
            env=clean_env(), stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while not is_mounted(mnt):
            if proc.poll() is not None or time.time() > deadline:
                sys.exit("zenmlfs did not mount; see %s" % work)
            time.sleep(0.05)
        src = os.path.join(work, "reader.c")
        exe = os.path.join(work, "reader")
        with open(src, "w") as f:
            f.write(READER)
        subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
        token = os.path.join(mnt, "token")
        open(bound, "w").close()
        subprocess.run(["mount", "--bind", token, bound], check=True)
        specs = [("held", "held", token), ("bind", "open", bound)] + \
            [("fresh%d" % i, "open", token) for i in range(args.fresh)]
        for name, mode, path in specs:
            readers.append((name, mode, subprocess.Popen(
                [exe, mode, path], stdout=subprocess.PIPE, text=True)))
        time.sleep(0.5)
        t0 = time.time()
        for _ in range(args.refreshes):
            with open(os.path.join(mnt, "refresh"), "w") as f:
                f.write("1\n")
        took = time.time() - t0
        time.sleep(0.5)
        out = set(t.encode() for t in proxy.tokens_out)
        bad_total = 0
        print("%d refreshes in %.1f s; %d tokens handed out, %d lengths"
              % (args.refreshes, took, len(out), len({len(t) for t in out})))
        for name, mode, p in readers:
            p.terminate()
            lines = p.communicate(timeout=60)[0].split("\n")
            reads, errors = int(lines[0].split()[1]), int(lines[0].split()[3])
            seen = [bytes.fromhex(x) for x in lines[1:] if x]
            bad = [s for s in seen if s not in out]
            if name in ("held", "bind") and len(seen) != 1:
                bad += seen[1:]
            bad_total += len(bad)
            print("%-7s %10d reads %6d errors %5d distinct %4d bad"
                  % (name, reads, errors, len(seen), len(bad)))
        print("verdict: %s" % ("ok, never parts of two tokens" if not
                               bad_total else "FAILED: %d bad contents"
                               % bad_total))
        return 1 if bad_total else 0
    finally:
        for _, _, p in readers:
            if p.poll() is None:
                p.kill()
        subprocess.run(["umount", "-l", bound], stderr=subprocess.DEVNULL)
        if proc is not None:
            subprocess.run(["fusermount3", "-u", mnt],
                           stderr=subprocess.DEVNULL)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if proxy is not None:
            proxy.stop()
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
