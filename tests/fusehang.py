"""A FUSE file system that never answers, for the zenmlfs tests.

Run as root in a mount namespace of its own, so that nobody else (another
test run's `zenmlfs status`, a `df`) can trip over the hung mount:

    unshare --mount --propagation private python3 fusehang.py \\
        [--dead] [--timeout S] -- CMD [ARG...]

It mounts /dev/fuse (mount(2), type fuse.zenmlfs) on a fresh directory
under /tmp, answers FUSE_INIT and then reads every request and answers
none: a process that touches the mount waits uninterruptibly, as on a
daemon that is stuck.  With --dead it closes /dev/fuse at once instead: a
dead mount (ENOTCONN), as a killed daemon leaves.  It then runs CMD, with
"{mnt}" in an argument replaced by the mount point, waits at most S
seconds for it (exit and end of its output), aborts the connection (which
frees whatever waits on the mount), unmounts lazily and prints one JSON
object:

    mnt, rc, took (seconds until CMD was done; null when it was not
    within S), stdout, stderr, reaped (processes left behind by CMD,
    reaped here as their subreaper once the connection was aborted),
    left (those still alive 10 s later)
"""

import ctypes
import errno
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

FUSE_INIT = 26
MS_NOSUID, MS_NODEV = 2, 4
MNT_DETACH = 2
PR_SET_CHILD_SUBREAPER = 36

libc = ctypes.CDLL(None, use_errno=True)


def check(ret):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def mount_fuse(mnt):
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    opts = "fd=%d,rootmode=40000,user_id=0,group_id=0" % fd
    check(libc.mount(b"zenmlfs", mnt.encode(), b"fuse.zenmlfs",
                     MS_NOSUID | MS_NODEV, opts.encode()))
    # FUSE_INIT is queued by the mount itself.
    req = os.read(fd, 1 << 20)
    _, opcode, unique = struct.unpack_from("<IIQ", req)
    if opcode != FUSE_INIT:
        raise RuntimeError("first request is %d, not FUSE_INIT" % opcode)
    # fuse_init_out (64 bytes): 7.31, max_write 4096, time_gran 1
    out = struct.pack("<IIIIHHIIHHI7I", 7, 31, 0, 0, 0, 0, 4096, 1, 0, 0,
                      0, *([0] * 7))
    os.write(fd, struct.pack("<IiQ", 16 + len(out), 0, unique) + out)
    return fd


def swallow(fd, stop):
    """Read every request, answer none, until stop is set."""
    while not stop.is_set():
        r, _, _ = select.select([fd], [], [], 0.1)
        if not r:
            continue
        try:
            os.read(fd, 1 << 20)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                continue
            return


def usable():
    """Why fusehang cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root (mount(2) of /dev/fuse)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if not shutil.which("unshare"):
        return "no unshare(1)"
    return ""


def run(cmd, dead=False, timeout=15.0):
    """Run cmd ("{mnt}" in an argument: the mount point) against a mount
    that never answers (dead=True: a dead one), in a mount namespace of
    its own; returns the JSON object described above."""
    args = ["unshare", "--mount", "--propagation", "private",
            sys.executable, os.path.abspath(__file__)]
    if dead:
        args.append("--dead")
    args += ["--timeout", str(timeout), "--"] + list(cmd)
    r = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout + 60)
    if r.returncode != 0:
        raise RuntimeError("fusehang failed (%d): %s" % (r.returncode,
                                                         r.stderr))
    return json.loads(r.stdout)


def main(argv):
    dead = False
    timeout = 15.0
    while argv and argv[0] != "--":
        if argv[0] == "--dead":
            dead = True
            argv = argv[1:]
        elif argv[0] == "--timeout":
            timeout = float(argv[1])
            argv = argv[2:]
        else:
            raise SystemExit("usage: fusehang.py [--dead] [--timeout S] "
                             "-- CMD...")
    cmd = argv[1:]
    check(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
    mnt = tempfile.mkdtemp(prefix="zenmlfs-hang-", dir="/tmp")
    fd = mount_fuse(mnt)
    stop = threading.Event()
    reader = None
    if dead:
        os.close(fd)
        fd = -1
    else:
        reader = threading.Thread(target=swallow, args=(fd, stop))
        reader.start()

    res = {"mnt": mnt}
    t0 = time.monotonic()
    proc = subprocess.Popen([a.replace("{mnt}", mnt) for a in cmd],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        res["took"] = time.monotonic() - t0
    except subprocess.TimeoutExpired:
        res["took"] = None
        out = err = None

    # Abort the connection: every request waiting on it fails at once.
    stop.set()
    if reader:
        reader.join()
    if fd >= 0:
        os.close(fd)
    libc.umount2(mnt.encode(), MNT_DETACH)
    if out is None:
        out, err = proc.communicate(timeout=30)
    res.update(rc=proc.returncode, stdout=out, stderr=err)

    # What CMD left behind (re-parented to us) must now go.
    reaped = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            reaped += 1
        else:
            time.sleep(0.05)
    left = 0
    for p in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % p) as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        left += ppid == str(os.getpid())
    res.update(reaped=reaped, left=left)
    try:
        os.rmdir(mnt)
    except OSError:
        pass
    print(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1:])
