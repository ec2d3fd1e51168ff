"""What the benchmarks share: a real ZenML server (tests/zenserver.py) in
a fresh folder, a service account with an API key, optionally the fault
proxy (tests/proxy.py, to count requests) in front of the server, and
zenmlfs mounted with the key; everything stopped and removed afterwards.

    with bench_mount("zenmlfs-bench", opts="token_lifetime=60",
                     proxy=True) as b:
        b.mnt, b.srv, b.sa, b.proxy, b.work, b.proc
"""

import contextlib
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
from zenserver import ServiceAccount, ZenServer, clean_env  # noqa: E402

ZENMLFS_BIN = os.environ.get("ZENMLFS_BIN",
                             os.path.join(REPO, "build", "zenmlfs"))


def is_mounted(path):
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


class Bench:
    """work (the folder), srv (ZenServer), sa (ServiceAccount), proxy
    (FaultProxy or None), mnt (the mount point), proc (the daemon)."""
    work = srv = sa = proxy = mnt = proc = None


@contextlib.contextmanager
def bench_mount(sa_name, opts="", proxy=False):
    """Start the server, make service account sa_name with an API key
    (in a 0600 file), start the counting proxy if asked, and mount
    zenmlfs with the key (through the proxy if any, -o opts if given);
    yields a Bench once mounted.  Exits the program if the daemon does
    not mount within 30 s."""
    if not os.access(ZENMLFS_BIN, os.X_OK):
        sys.exit("no %s: build first (scripts/test or scripts/up)"
                 % ZENMLFS_BIN)
    b = Bench()
    b.work = tempfile.mkdtemp(prefix="zenmlfs-bench-", dir="/tmp")
    os.chmod(b.work, 0o755)
    b.srv = ZenServer(os.path.join(b.work, "server"))
    b.mnt = os.path.join(b.work, "mnt")
    os.mkdir(b.mnt)
    try:
        print("starting the ZenML server ...", file=sys.stderr)
        b.srv.start()
        b.sa = ServiceAccount(b.srv, name=sa_name)
        url = b.srv.url
        if proxy:
            b.proxy = FaultProxy("127.0.0.1", b.srv.port).start()
            url = b.proxy.url
        keyfile = os.path.join(b.work, "api-key")
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(b.sa.key + "\n")
        cmd = [ZENMLFS_BIN, "-f", "--log",
               os.path.join(b.work, "zenmlfs.log"), "--url", url,
               "--api-key-file", keyfile]
        if opts:
            cmd += ["-o", opts]
        b.proc = subprocess.Popen(cmd + [b.mnt], env=clean_env(),
                                  stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while not is_mounted(b.mnt):
            if b.proc.poll() is not None or time.time() > deadline:
                sys.exit("zenmlfs did not mount; see %s/zenmlfs.log"
                         % b.work)
            time.sleep(0.05)
        yield b
    finally:
        if b.proc is not None:
            if is_mounted(b.mnt):
                subprocess.run(["fusermount3", "-u", b.mnt])
                if is_mounted(b.mnt):
                    subprocess.run(["fusermount3", "-uz", b.mnt])
            try:
                b.proc.wait(20)
            except subprocess.TimeoutExpired:
                b.proc.kill()
        if b.proxy is not None:
            b.proxy.stop()
        b.srv.stop()
        if not is_mounted(b.mnt):
            shutil.rmtree(b.work, ignore_errors=True)
