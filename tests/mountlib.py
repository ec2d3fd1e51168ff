"""A mount seen from outside, for the tests and bench/ alike: reading a
file as `cat` does, and the FUSE connection of a mount whose daemon may
not answer (found, and aborted, without touching the mount itself).

bench/ scripts put tests/ on sys.path and import it as the tests do:
    from mountlib import abort_connection, fuse_minor, read_file
"""

import os
import subprocess


def read_file(path):
    """open+read+close with os calls, as `cat` does; returns bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)
    finally:
        os.close(fd)


def fuse_minor(path):
    """The FUSE connection number (the device minor) of the mount at path,
    from /proc/self/mountinfo: nothing touches the mount itself.  None if
    path is not a mount point."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4].replace("\\040", " ") == path:
                found = int(parts[2].split(":")[1])     # the last one wins
    return found


def abort_connection(minor):
    """Abort FUSE connection `minor` (as root): every request waiting on
    the daemon fails with ENOTCONN, and the daemon's /dev/fuse reads
    end.  True if it was aborted."""
    if minor is None:
        return False
    base = "/sys/fs/fuse/connections"
    d = os.path.join(base, str(minor))
    if not os.path.isdir(d):
        subprocess.run(["mount", "-t", "fusectl", "fusectl", base],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with open(os.path.join(d, "abort"), "w") as f:
            f.write("1")
        return True
    except OSError:
        return False


def threads_wchan(pid):
    """{"state:wchan": threads} of pid's threads (for messages); "gone"
    if pid is."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return "gone"
    for t in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                st = f.read().rsplit(")", 1)[1].split()[0]
            with open("/proc/%d/task/%s/wchan" % (pid, t)) as f:
                k = "%s:%s" % (st, f.read())
        except OSError:
            continue
        out[k] = out.get(k, 0) + 1
    return out
