"""Issue "Containers and Kubernetes": the consumer contract and the host
layout of docs/containers.md, seen from real sandboxes against the real
server; the change notification; the Kubernetes manifests and the
Containerfile checked against the binary.

The documented layout: the daemon mounts at HOST/zen, where HOST is a
directory on a *shared* mount, and consumers bind HOST (not HOST/zen, not
HOST/zen/token) with slave propagation.  This machine's / is private, so
each test first makes HOST shared (`mount --bind HOST HOST && mount
--make-shared HOST`), as a systemd host already is.

Sandboxes: bubblewrap, run as uid 65534 (an unprivileged user namespace),
and `unshare -m --propagation slave` + chroot, both around a rootfs of
busybox-static alone.  In there, consumer.sh reads each view every 20 ms
with `cat` and prints one line per read ("LABEL OK TOKEN" or "LABEL ERR
MESSAGE"); a thread here timestamps each line as it arrives.

Measured numbers are printed (pytest -s shows them).
"""

import base64
import errno
import hashlib
import hmac
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import yaml

from conftest import (SANITIZED, TMP_PREFIX, ZENMLFS_BIN, _base_env,
                      _fusermount_u, TOKENS_HAVE_IAT, distinct_token_gap,
                      is_mounted, read_file)
from zenserver import jwt_claims

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs", "containers.md")
CONTAINERFILE = os.path.join(REPO, "Containerfile")
K8S = os.path.join(REPO, "deploy", "kubernetes")

# The options docs/containers.md gives the daemon for consumers that run
# as another user.
OPTS = "allow_other,token_mode=0444"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
EXIT_TIMEOUT = 20
# The errnos the contract allows a consumer of the folder bind to see while
# a daemon restarts (docs/containers.md, "What errno means what").
RESTART_ERRNOS = {"ENOENT", "ENOTCONN"}
# Token attributes are cached this long: a held inode (a file bind) fails
# at most this long (plus a read period) after its daemon is gone.
ATTR_TIMEOUT = 10

CONSUMER_SH = r"""
# consumer.sh LABEL FILE [LABEL FILE...]: read each FILE every 20 ms, as a
# container that reads its token per request does; one line per read.
loop() {
	while :; do
		if t=$(cat "$2" 2>&1); then
			echo "$1 OK $t"
		else
			echo "$1 ERR $t"
		fi
		usleep 20000
	done
}
while [ $# -ge 2 ]; do
	loop "$1" "$2" &
	shift 2
done
wait
"""

ERRNO_OF_MESSAGE = {os.strerror(n): name
                    for n, name in errno.errorcode.items()}


def errno_of(message):
    """busybox cat says "cat: can't open 'F': No such file or directory"
    or "cat: read error: Input/output error": the errno's name."""
    text = message.rsplit(": ", 1)[-1].strip()
    return ERRNO_OF_MESSAGE.get(text, "?" + text)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def valid_jwt(tok, secret):
    """A whole token: three parts, signed by the server, not expired."""
    parts = tok.split(".")
    if len(parts) != 3:
        return False
    mac = hmac.new(secret.encode(), (parts[0] + "." + parts[1]).encode(),
                   hashlib.sha256).digest()
    if not hmac.compare_digest(b64url(mac), parts[2]):
        return False
    return jwt_claims(tok)["exp"] > time.time()


def fingerprint(tok):
    return hashlib.sha256(tok.encode()).hexdigest()[:16]


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kw)


# ------------------------------------------------------------ host layout


def mounts_at(path):
    """How many mounts are stacked at path (per /proc/self/mounts)."""
    with open("/proc/self/mounts") as f:
        return sum(1 for line in f
                   if line.split()[1].replace("\\040", " ") == path)


def mount_ids_at(path):
    """The IDs of the mounts at path (per /proc/self/mountinfo)."""
    ids = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4].replace("\\040", " ") == path:
                ids.add(fields[0])
    return ids


def alive(path):
    """Whether a zenmlfs mount is on top at path and answers (statfs
    always reaches a FUSE daemon)."""
    top = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4].replace("\\040", " ") == path:
                top = fields[fields.index("-") + 1]
    if top != "fuse.zenmlfs":
        return False
    try:
        os.statvfs(path)
        return True
    except OSError:
        return False


class Daemon:
    """One zenmlfs -f at HOST/zen; t_mounted is when the mount appeared."""

    def __init__(self, proc, log_path, t_mounted, stdio_path=None):
        self.proc = proc
        self.log_path = log_path
        self.t_mounted = t_mounted
        self.stdio_path = stdio_path

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stdio(self):
        try:
            with open(self.stdio_path, errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def error_lines(self):
        return [ln for ln in self.log().splitlines() if ": error:" in ln]


class HostLayout:
    """HOST, a shared mount of its own; the daemon's mount point HOST/zen;
    the API key and the logs in a private directory outside HOST (never
    under what consumers bind)."""

    def __init__(self, url, key):
        self.url = url
        self.dir = tempfile.mkdtemp(prefix=TMP_PREFIX + "host-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.priv = tempfile.mkdtemp(prefix=TMP_PREFIX + "priv-", dir="/tmp")
        self.mnt = os.path.join(self.dir, "zen")
        self.daemons = []
        self.shared = False
        subprocess.run(["mount", "--bind", self.dir, self.dir], check=True)
        self.shared = True
        subprocess.run(["mount", "--make-shared", self.dir], check=True)
        os.mkdir(self.mnt, 0o755)
        self.key_file = os.path.join(self.priv, "api-key")
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        self.home = os.path.join(self.priv, "home")
        os.mkdir(self.home, 0o700)

    def start(self, opts=OPTS, timeout=30):
        """Start a daemon at HOST/zen with the mount fixture's command
        line (zenmlfs -f --log --url --api-key-file -o OPTS); return once
        the mount is there (polled every 5 ms)."""
        before = mount_ids_at(self.mnt)
        # a dead mount there is replaced, and its ID may be reused
        dead_before = bool(before) and not alive(self.mnt)
        n = len(self.daemons)
        log_path = os.path.join(self.priv, "zenmlfs.%d.log" % n)
        stdio_path = os.path.join(self.priv, "stdio.%d.log" % n)
        cmd = [ZENMLFS_BIN, "-f", "--log", log_path, "--url", self.url,
               "--api-key-file", self.key_file, "-o", opts, self.mnt]
        out = open(stdio_path, "wb")
        proc = subprocess.Popen(cmd, env=_base_env(self.home),
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
        out.close()
        d = Daemon(proc, log_path, None, stdio_path)
        self.daemons.append(d)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # a new mount there (a dead one it replaced is gone)
            if mount_ids_at(self.mnt) - before or \
                    (dead_before and alive(self.mnt)):
                d.t_mounted = time.monotonic()
                return d
            if proc.poll() is not None:
                pytest.fail("zenmlfs exited with %s before mounting:\n%s%s"
                            % (proc.returncode, d.stdio(), d.log()))
            time.sleep(0.005)
        pytest.fail("not mounted after %d s:\n%s%s"
                    % (timeout, d.stdio(), d.log()))

    def token(self):
        return read_file(os.path.join(self.mnt, "token")).decode()

    def refresh(self):
        fd = os.open(os.path.join(self.mnt, "refresh"),
                     os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, b"1")
        finally:
            os.close(fd)

    def diagnostics(self):
        out = []
        for i, d in enumerate(self.daemons):
            out.append("--- daemon %d (exit %s), stdio:\n%s--- log:\n%s"
                       % (i, d.proc.poll(), d.stdio(), d.log()))
        return "".join(out)

    def close(self):
        for d in self.daemons:
            d.stop()
        _fusermount_u(self.mnt)
        if self.shared:
            for _ in range(20):
                if run(["umount", self.dir]).returncode == 0:
                    break
                time.sleep(0.1)
            else:
                run(["umount", "-l", self.dir])
        shutil.rmtree(self.priv, ignore_errors=True)
        # Never rmtree into a live mount.
        if not is_mounted(self.mnt) and not is_mounted(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def host_layout(zenml_server):
    """Factory: host_layout(key) -> HostLayout.  At teardown: daemons
    stopped, HOST/zen unmounted, the shared bind of HOST undone."""
    made = []

    def factory(key):
        h = HostLayout(zenml_server.url, key)
        made.append(h)
        return h
    factory.diagnostics = lambda: "".join(h.diagnostics() for h in made)
    yield factory
    for h in made:
        h.close()


# -------------------------------------------------------------- sandboxes


@pytest.fixture(scope="module")
def rootfs():
    """A container's root: busybox-static and consumer.sh, nothing else,
    with the places the views are bound at (/zen-host, /zen-mp,
    /zen-token)."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    r = run(["ldd", busybox])
    assert r.returncode != 0 or "not a dynamic" in r.stdout, \
        "%s is not static: install busybox-static" % busybox
    d = tempfile.mkdtemp(prefix=TMP_PREFIX + "rootfs-", dir="/tmp")
    os.chmod(d, 0o755)
    for sub in ("bin", "proc", "dev", "tmp", "zen-host", "zen-mp"):
        os.mkdir(os.path.join(d, sub), 0o755)
    shutil.copy(busybox, os.path.join(d, "bin", "busybox"))
    os.chmod(os.path.join(d, "bin", "busybox"), 0o755)
    for applet in ("sh", "cat", "usleep"):
        os.symlink("busybox", os.path.join(d, "bin", applet))
    open(os.path.join(d, "zen-token"), "w").close()
    open(os.path.join(d, "dev", "null"), "w").close()   # bound over
    with open(os.path.join(d, "consumer.sh"), "w") as f:
        f.write(CONSUMER_SH)
    os.chmod(os.path.join(d, "consumer.sh"), 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Line:
    __slots__ = ("t", "label", "ok", "payload")

    def __init__(self, t, label, ok, payload):
        self.t, self.label, self.ok, self.payload = t, label, ok, payload

    @property
    def errno(self):
        return None if self.ok else errno_of(self.payload)


def parse_consumer(text):
    """consumer.sh's "LABEL OK TOKEN" / "LABEL ERR MESSAGE"."""
    parts = text.split(" ", 2)
    if len(parts) >= 2 and parts[1] in ("OK", "ERR"):
        return parts[0], parts[1] == "OK", parts[2] if len(parts) > 2 else ""
    return None


def parse_watcher(text):
    """watch-token.py's "token-changed FINGERPRINT"."""
    parts = text.split()
    if len(parts) == 2 and parts[0] == "token-changed":
        return "token", True, parts[1]
    return None


class Sandbox:
    """A consumer process; every line it prints, timestamped on arrival
    (time.monotonic()).  Killed, with all its processes, by stop()."""

    def __init__(self, cmd, parse=None):
        self.cmd = cmd
        self.parse = parse or parse_consumer
        self.lines = []
        self.other = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for raw in self.proc.stdout:
            t = time.monotonic()
            text = raw.decode(errors="replace").rstrip("\n")
            parsed = self.parse(text)
            with self.cond:
                if parsed:
                    self.lines.append(Line(t, *parsed))
                else:
                    self.other.append((t, text))
                self.cond.notify_all()

    def wait(self, pred, timeout, what="a line"):
        """The first line at index >= 0 satisfying pred, waited for up
        to timeout seconds."""
        deadline = time.monotonic() + timeout
        i = 0
        with self.cond:
            while True:
                while i < len(self.lines):
                    if pred(self.lines[i]):
                        return self.lines[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    pytest.fail("no %s within %.1f s; last lines: %s; "
                                "other output: %s"
                                % (what, timeout,
                                   [(ln.label, ln.ok, ln.payload[:60])
                                    for ln in self.lines[-6:]],
                                   self.other[-6:]))
                self.cond.wait(min(left, 0.1))

    def wait_token(self, label, tok, timeout):
        return self.wait(lambda ln: ln.label == label and ln.ok
                         and ln.payload == tok, timeout,
                         "read of the expected token through " + label)

    def view(self, label):
        with self.cond:
            return [ln for ln in self.lines if ln.label == label]

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        self.thread.join(10)


@pytest.fixture
def sandboxes():
    """Factory: sandboxes(cmd) -> Sandbox; all killed at teardown."""
    made = []

    def factory(cmd, parse=None):
        s = Sandbox(cmd, parse)
        made.append(s)
        return s
    yield factory
    for s in made:
        s.stop()


def bwrap_consumer(root, binds, views):
    """bubblewrap as uid 65534 (no privilege at all): root is the busybox
    rootfs, binds (src, dst) are plain --bind, views LABEL -> path."""
    cmd = NOBODY + ["bwrap", "--bind", root, "/", "--proc", "/proc",
                    "--dev", "/dev", "--unshare-pid", "--die-with-parent"]
    for src, dst in binds:
        cmd += ["--bind", src, dst]
    cmd += ["/bin/sh", "/consumer.sh"]
    for label, path in views.items():
        cmd += [label, path]
    return cmd


def unshare_consumer(root, host_dir, views):
    """unshare -m --propagation slave, a recursive bind of host_dir at
    /zen-host, then chroot to root as uid 65534."""
    script = ('h=$1 r=$2; shift 2; '
              'mount --rbind "$h" "$r/zen-host" && '
              'mount --make-rslave "$r/zen-host" && '
              'mount --bind /dev/null "$r/dev/null" && '
              'exec chroot --userspec=65534:65534 "$r" /bin/sh /consumer.sh '
              '"$@"')
    cmd = ["unshare", "-m", "--propagation", "slave", "sh", "-c", script,
           "sh", host_dir, root]
    for label, path in views.items():
        cmd += [label, path]
    return cmd


def check_reads(lines, good_tokens, secret):
    """Every OK read is a whole, valid token among good_tokens, and the
    reads never go back to an older token (good_tokens in publication
    order)."""
    index = {t: i for i, t in enumerate(good_tokens)}
    last = -1
    for ln in lines:
        if not ln.ok:
            continue
        assert ln.payload in index, "%s read a token never published: %r" \
            % (ln.label, ln.payload[:80])
        assert valid_jwt(ln.payload, secret), "%s read a bad token" % ln.label
        assert index[ln.payload] >= last, "%s went back to an older token" \
            % ln.label
        last = index[ln.payload]


# ------------------------------------ 1. the documented layout, restarts


def test_folder_bind_follows_refreshes_and_a_restart(
        zenml_server, service_account, host_layout, rootfs, sandboxes):
    """bubblewrap binds HOST: the consumer reads every new token within
    1 s over 50 refreshes, and the new daemon's token within 1 s of its
    mount after SIGTERM + a new daemon at the same path, without being
    restarted; between the two it sees only ENOENT/ENOTCONN."""
    h = host_layout(service_account.key)
    a = h.start()
    published = [h.token()]
    sb = sandboxes(bwrap_consumer(rootfs, [(h.dir, "/zen-host")],
                                  {"dir": "/zen-host/zen/token"}))
    sb.wait_token("dir", published[0], 10)

    lags = []
    # one a second on a server without iat (conftest.distinct_token_gap)
    for _ in range(50 if TOKENS_HAVE_IAT else 8):
        distinct_token_gap()
        h.refresh()
        tok = h.token()
        assert tok not in published
        published.append(tok)
        t0 = time.monotonic()
        lags.append(sb.wait_token("dir", tok, 1.0).t - t0)

    distinct_token_gap()
    t_term = time.monotonic()
    assert a.stop(signal.SIGTERM) == 0, a.log()
    t_exit = time.monotonic()
    b = h.start()
    tok_b = h.token()
    assert tok_b not in published
    first_b = sb.wait_token("dir", tok_b, 5.0)
    window = first_b.t - b.t_mounted
    time.sleep(0.3)
    sb.stop()

    lines = sb.view("dir")
    check_reads(lines, published + [tok_b], zenml_server.jwt_secret)
    errs = [ln for ln in lines if not ln.ok]
    for ln in errs:
        assert t_term <= ln.t <= first_b.t, \
            "error outside the restart window: %s" % ln.payload
        assert ln.errno in RESTART_ERRNOS, ln.payload
    print("\nfolder bind (bwrap): %d reads, 50 refreshes seen after "
          "%.0f ms (max %.0f ms); SIGTERM->exit %.0f ms, exit->new mount "
          "%.0f ms, new mount->first good read %.0f ms; errors in the "
          "window: %s"
          % (len(lines), 1000 * sum(lags) / len(lags), 1000 * max(lags),
             1000 * (t_exit - t_term), 1000 * (b.t_mounted - t_exit),
             1000 * window,
             sorted({ln.errno for ln in errs}) or "none"))
    assert window < 1.0, "new daemon's token seen %.2f s after its mount" \
        % window

    assert b.stop(signal.SIGTERM) == 0
    for d in (a, b):
        assert not d.error_lines(), d.log()


def test_crash_restart_seen_through_unshare_chroot(
        zenml_server, service_account, host_layout, rootfs, sandboxes):
    """unshare -m --propagation slave + chroot: a daemon killed with
    SIGKILL (auto_unmount removes its mount) and a new one started at
    the same path: the consumer reads the new token within 1 s of the new
    mount, seeing only ENOENT/ENOTCONN between the two."""
    h = host_layout(service_account.key)
    a = h.start()
    tok_a = h.token()
    sb = sandboxes(unshare_consumer(rootfs, h.dir,
                                    {"dir": "/zen-host/zen/token"}))
    sb.wait_token("dir", tok_a, 10)

    t_kill = time.monotonic()
    assert a.stop(signal.SIGKILL) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while is_mounted(h.mnt):
        assert time.monotonic() < deadline, "auto_unmount left the mount"
        time.sleep(0.005)
    t_gone = time.monotonic()
    # Without iat, a token minted in a's second would equal a's: a read
    # of a's token would pass for b's.
    distinct_token_gap()
    b = h.start()
    tok_b = h.token()
    assert tok_b != tok_a
    first_b = sb.wait_token("dir", tok_b, 5.0)
    window = first_b.t - b.t_mounted
    time.sleep(0.2)
    sb.stop()

    lines = sb.view("dir")
    check_reads(lines, [tok_a, tok_b], zenml_server.jwt_secret)
    errs = [ln for ln in lines if not ln.ok]
    for ln in errs:
        assert t_kill <= ln.t <= first_b.t, ln.payload
        assert ln.errno in RESTART_ERRNOS, ln.payload
    print("\ncrash (unshare+chroot): SIGKILL->mount gone %.0f ms, new mount"
          "->first good read %.0f ms; errors: %s"
          % (1000 * (t_gone - t_kill), 1000 * window,
             sorted({ln.errno for ln in errs}) or "none"))
    assert window < 1.0
    assert b.stop() == 0
    assert not b.error_lines(), b.log()


def assert_gone_for_good(lines):
    """Reads through a copy of a stopped daemon's mount (a binding that is
    not supported): every one fails with ENOTCONN, except that the one
    read under way when the daemon let go of its connection fails with
    ECONNABORTED (the kernel's error for a request a closing connection
    leaves unanswered; the copy keeps the connection alive until then).
    One reader: at most one such read."""
    errnos = [ln.errno for ln in lines]
    assert errnos and set(errnos) <= {"ENOTCONN", "ECONNABORTED"} and \
        errnos.count("ECONNABORTED") <= 1, \
        {ln.payload[:60] for ln in lines}


def test_unsupported_layouts_fail_as_documented(
        zenml_server, service_account, host_layout, rootfs, sandboxes):
    """The same restart seen through a bind of the mount point itself and
    a bind of the single token file (docs/containers.md, "Not
    supported"): neither ever shows the new daemon's token.  The mount
    point serves the old token until about a second after the old daemon
    exits, then fails with ENOTCONN for good; the file fails with
    ENOTCONN from the old daemon's exit on (it dropped the token's pages
    before it stopped), even for busybox cat, which does not fstat.  In
    both, the one read under way when the daemon lets go may fail with
    ECONNABORTED instead.  The folder bind, alongside, follows."""
    h = host_layout(service_account.key)
    a = h.start()
    tok_a = h.token()
    sb = sandboxes(bwrap_consumer(
        rootfs,
        [(h.dir, "/zen-host"), (h.mnt, "/zen-mp"),
         (os.path.join(h.mnt, "token"), "/zen-token")],
        {"dir": "/zen-host/zen/token", "mp": "/zen-mp/token",
         "file": "/zen-token"}))
    for label in ("dir", "mp", "file"):
        sb.wait_token(label, tok_a, 10)

    assert a.stop(signal.SIGTERM) == 0
    t_exit = time.monotonic()
    distinct_token_gap()
    b = h.start()
    tok_b = h.token()
    assert tok_b != tok_a
    sb.wait_token("dir", tok_b, 5.0)
    time.sleep(max(0.0, t_exit + ATTR_TIMEOUT + 2 - time.monotonic()))
    sb.stop()

    mp = sb.view("mp")
    # The old token (cached name and pages) for about a second, then
    # ENOTCONN only.
    mp_first_err = next(ln for ln in mp if not ln.ok)
    assert mp_first_err.t - t_exit < 2.0
    after = [ln for ln in mp if ln.t >= mp_first_err.t]
    assert_gone_for_good(after)
    assert all(ln.payload == tok_a for ln in mp if ln.ok)

    # The daemon dropped the token's pages before it stopped: from its
    # exit on, the file bind fails with ENOTCONN, never the old token.
    fl = sb.view("file")
    assert not any(ln.ok and ln.payload == tok_b for ln in fl)
    assert all(ln.payload == tok_a for ln in fl if ln.ok), \
        "the file bind read something other than the old token"
    assert not any(ln.ok for ln in fl if ln.t > t_exit), \
        "the file bind served the old token after the daemon exited"
    assert_gone_for_good([ln for ln in fl if not ln.ok])
    file_errnos = {ln.errno for ln in fl if not ln.ok}
    late = [ln for ln in fl if ln.t > t_exit + ATTR_TIMEOUT + 1]
    assert late, "the file bind's reader stopped"

    print("\nmount point bound: %s %.0f ms after the old daemon exited, "
          "then only that; file bound: %s from the exit on"
          % (mp_first_err.errno, 1000 * (mp_first_err.t - t_exit),
             sorted(file_errnos)))
    assert b.stop() == 0


# ------------------------------------------------ 2. change notification


def docs_watcher_source():
    """The watcher program of docs/containers.md (the fenced python block
    that names watch-token.py): the test runs exactly what the docs
    show."""
    with open(DOCS) as f:
        text = f.read()
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        if "watch-token.py" in block:
            return block
    pytest.fail("docs/containers.md has no watch-token.py block")


def test_folder_watch_one_event_per_refresh_in_order(
        zenml_server, service_account, host_layout, sandboxes):
    """The watcher from docs/containers.md, run as uid 65534 in a mount
    namespace of its own that binds HOST (as a container): one line per
    refresh, in order, for 100 refreshes one by one and 20 back to back;
    after a daemon restart it re-arms by itself and reports the new
    token.  Reads of token meanwhile stay fast."""
    h = host_layout(service_account.key)
    a = h.start()
    ns = tempfile.mkdtemp(prefix=TMP_PREFIX + "watch-", dir="/tmp")
    try:
        os.chmod(ns, 0o755)
        os.mkdir(os.path.join(ns, "zen-host"))
        prog = os.path.join(ns, "watch-token.py")
        with open(prog, "w") as f:
            f.write(docs_watcher_source())
        os.chmod(prog, 0o755)
        # The bind exists only in the watcher's own mount namespace.
        cmd = (["unshare", "-m", "--propagation", "slave", "sh", "-c",
                'h=$1 n=$2; shift 2; mount --rbind "$h" "$n/zen-host" && '
                'mount --make-rslave "$n/zen-host" && exec "$@"', "sh",
                h.dir, ns] + NOBODY +
               ["/usr/bin/python3", prog, os.path.join(ns, "zen-host/zen")])
        w = sandboxes(cmd, parse_watcher)
        watched(w, h, a)
    finally:
        shutil.rmtree(ns, ignore_errors=True)


def watched(w, h, a):
    seen = []          # fingerprints printed, in order

    def next_line(timeout):
        ln = w.wait(lambda ln: ln.label == "token" and ln not in seen,
                    timeout, "watcher line")
        seen.append(ln)
        return ln

    tokens = [h.token()]
    assert next_line(10).payload == fingerprint(tokens[0])

    # 100 refreshes, one at a time: exactly one line each, the new token.
    lags = []
    for _ in range(100 if TOKENS_HAVE_IAT else 8):
        distinct_token_gap()
        h.refresh()
        tokens.append(h.token())
        t0 = time.monotonic()
        ln = next_line(2.0)
        lags.append(ln.t - t0)
        assert ln.payload == fingerprint(tokens[-1]), \
            "event %d is not the token just published" % (len(tokens) - 1)

    # Reads are not slowed by the watch: 1000 open+read+close, median.
    times = []
    for _ in range(1000):
        t0 = time.perf_counter()
        h.token()
        times.append(time.perf_counter() - t0)
    times.sort()
    read_us = 1e6 * times[len(times) // 2]

    # 20 back to back: 20 lines, never out of order, the last one last.
    burst = []
    for _ in range(20 if TOKENS_HAVE_IAT else 4):
        distinct_token_gap()
        h.refresh()
        burst.append(h.token())
    fps = [fingerprint(t) for t in burst]
    got = [next_line(2.0).payload for _ in range(len(burst))]
    order = [fps.index(p) for p in got]
    assert order == sorted(order), order
    assert got[-1] == fps[-1]
    time.sleep(1.0)
    extra = [ln.payload for ln in w.view("token") if ln not in seen]
    assert not extra, "more events than refreshes: %s" % extra

    # A restart: the watch on the old mount goes silent; the watcher
    # notices the new mount by itself and reports its token.
    assert a.stop() == 0
    distinct_token_gap()
    b = h.start()
    tok_b = h.token()
    ln = next_line(5.0)
    rearm = ln.t - b.t_mounted
    assert ln.payload == fingerprint(tok_b)
    w.stop()
    assert not w.other, w.other
    print("\nwatcher: %d events in order, median lag %.1f ms (max %.1f); "
          "burst of %d: %d events; token read median %.0f us while "
          "watched; after a restart the new token reported %.0f ms after "
          "the mount"
          % (len(lags), 1000 * sorted(lags)[len(lags) // 2],
             1000 * max(lags), len(burst), len(got), read_us,
             1000 * rearm))
    assert read_us < 1000, "token reads take %.0f us" % read_us
    assert rearm < 2.0
    assert b.stop() == 0


# ---------------------------------------------- 3. Containerfile vs ldd


def containerfile_stages():
    """[(base image, [apt-get install package, ...]), ...] per stage."""
    with open(CONTAINERFILE) as f:
        text = f.read().replace("\\\n", " ")
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if re.match(r"(?i)^FROM\s", line):
            stages.append((line.split()[1], []))
        elif re.match(r"(?i)^RUN\s", line) and stages:
            for cmd in re.split(r"&&|;", line[3:]):
                words = cmd.split()
                if "apt-get" in words and "install" in words:
                    after = words[words.index("install") + 1:]
                    stages[-1][1].extend(w for w in after
                                         if not w.startswith("-"))
    return stages


def package_of(path, follow=True):
    """The Debian package that owns a library (tried under /usr and not,
    as merged /usr makes dpkg know only one of them); with follow, the
    file a symlink points to is tried too."""
    paths = [path, os.path.realpath(path)] if follow else [path]
    cands = list(paths)
    for p in paths:
        if p.startswith("/usr/"):
            cands.append(p[4:])
        else:
            cands.append("/usr" + p)
    for c in cands:
        r = run(["dpkg", "-S", c])
        if r.returncode == 0:
            return r.stdout.split(":")[0].strip()
    pytest.fail("no package owns %s" % path)


def depends_closure(pkgs):
    """Installed packages reachable from pkgs through Depends/Pre-Depends."""
    seen, todo = set(), list(pkgs)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        r = run(["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", p])
        for alt in r.stdout.split(","):
            for dep in alt.split("|"):
                name = dep.strip().split(" ")[0].split(":")[0]
                if name:
                    todo.append(name)
    return seen


SKIP_LIBS = ("linux-vdso", "ld-linux", "libc.so")
NEED_WITHOUT_LINKING = {"fuse3", "ca-certificates"}


@pytest.mark.skipif(SANITIZED, reason="an ASan build links libasan, "
                    "which the image does not ship")
def test_containerfile_runtime_packages_match_ldd():
    """The runtime stage installs exactly the packages of the libraries
    the binary links itself (readelf NEEDED, resolved by ldd), plus fuse3
    (fusermount3) and ca-certificates; every other library ldd resolves
    comes with them (Depends); the build stage has each one's -dev
    package and runs meson setup and ninja; the runtime stage is Debian
    slim."""
    stages = containerfile_stages()
    assert len(stages) >= 2, "a build stage and a runtime stage"
    (build_base, build_pkgs), (run_base, run_pkgs) = stages[0], stages[-1]
    assert re.match(r"(docker\.io/)?(library/)?debian:\S*-slim$", run_base), \
        run_base
    assert run_base.split(":")[1].split("-")[0] == \
        build_base.split(":")[1].split("-")[0], "one Debian release"

    ldd = run(["ldd", ZENMLFS_BIN])
    assert ldd.returncode == 0, ldd.stdout
    resolved = {}
    for line in ldd.stdout.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m:
            resolved[m.group(1)] = m.group(2)
    assert "not found" not in ldd.stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]",
                        run(["readelf", "-d", ZENMLFS_BIN]).stdout)
    assert needed, "readelf found no NEEDED entry"

    direct = {}
    for so in needed:
        if so.startswith(SKIP_LIBS):
            continue
        direct[package_of(resolved[so])] = so
    listed = set(run_pkgs)
    missing = set(direct) - listed
    assert not missing, "linked but not installed at run time: %s" % missing
    unneeded = listed - set(direct) - NEED_WITHOUT_LINKING
    assert not unneeded, "installed at run time, not linked: %s" % unneeded
    assert NEED_WITHOUT_LINKING <= listed

    closure = depends_closure(listed) | {"libc6"}
    for so, path in resolved.items():
        if so.startswith(SKIP_LIBS):
            continue
        pkg = package_of(path)
        assert pkg in closure, "%s (%s) comes with no listed package" \
            % (so, pkg)

    # Each directly linked library's -dev package (the one owning the
    # unversioned .so) is in the build stage, with the build tools.
    for pkg, so in direct.items():
        dev_so = re.sub(r"\.so\..*$", ".so", resolved[so])
        dev = package_of(dev_so, follow=False)
        assert dev in build_pkgs, "build stage lacks %s (for %s)" % (dev, so)
    for tool in ("meson", "ninja-build", "gcc", "pkg-config"):
        assert tool in build_pkgs, tool
    with open(CONTAINERFILE) as f:
        text = f.read()
    assert "meson setup" in text and "ninja" in text
    assert re.search(r"COPY --from=\S+ \S*zenmlfs /usr/bin/zenmlfs", text)


# ----------------------------------------------------- 4. Kubernetes


def k8s_objects():
    objs = []
    for name in sorted(os.listdir(K8S)):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(K8S, name)) as f:
                for doc in yaml.safe_load_all(f):
                    if doc and doc.get("kind") != "Kustomization":
                        objs.append((name, doc))
    return objs


def the(kind, name=None):
    found = [d for _, d in k8s_objects() if d.get("kind") == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, "%d %s objects" % (len(found), kind)
    return found[0]


def volume_mounts(container, volumes):
    """{mountPath: (volume, mount)} of a container."""
    by_name = {v["name"]: v for v in volumes}
    return {m["mountPath"]: (by_name[m["name"]], m)
            for m in container.get("volumeMounts", [])}


def daemon_container():
    ds = the("DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    (c,) = [c for c in spec["containers"] if c["name"] == "zenmlfs"]
    return ds, spec, c


HOST_DIR = "/var/lib/zenmlfs"
EXAMPLE_URL = "https://zenml.example.com"


def test_kubernetes_manifests_have_what_the_docs_say():
    """The YAML parses; the DaemonSet runs privileged with /dev/fuse, the
    host folder with Bidirectional propagation, the key from a Secret
    file of mode 0400, a liveness probe from `zenmlfs status` and a
    preStop that unmounts; the example Pod binds the same host folder
    read-only with HostToContainer and reads the token below it; every
    namespaced object is in a namespace the manifests make."""
    objs = k8s_objects()
    kinds = {d["kind"] for _, d in objs}
    assert {"Namespace", "ServiceAccount", "DaemonSet", "Secret",
            "Pod"} <= kinds, kinds
    namespaces = {d["metadata"]["name"] for _, d in objs
                  if d["kind"] == "Namespace"}
    for _, d in objs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") in namespaces, \
                d["metadata"]["name"]

    with open(os.path.join(K8S, "kustomization.yaml")) as f:
        kust = yaml.safe_load(f)
    applied = {d["kind"] for name, d in objs if name in kust["resources"]}
    assert {"Namespace", "ServiceAccount", "DaemonSet"} <= applied
    assert "Secret" not in applied, "the template's key would be applied"

    ds, spec, c = daemon_container()
    assert ds["apiVersion"] == "apps/v1"
    sel = ds["spec"]["selector"]["matchLabels"]
    assert sel.items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert spec["serviceAccountName"] == the("ServiceAccount")["metadata"][
        "name"]
    assert spec.get("automountServiceAccountToken") is False
    # One daemon per node at a time: a second one would find the path
    # taken (maxSurge 0).
    ru = ds["spec"]["updateStrategy"]["rollingUpdate"]
    assert ru.get("maxSurge", 0) == 0
    assert c["securityContext"]["privileged"] is True
    mounts = volume_mounts(c, spec["volumes"])
    vol, m = mounts[HOST_DIR]
    assert vol["hostPath"]["path"] == HOST_DIR
    assert m["mountPropagation"] == "Bidirectional"
    vol, m = mounts["/dev/fuse"]
    assert vol["hostPath"] == {"path": "/dev/fuse", "type": "CharDevice"}
    key_mounts = [(v, mt) for v, mt in mounts.values() if "secret" in v]
    assert len(key_mounts) == 1
    vol, m = key_mounts[0]
    assert vol["secret"]["defaultMode"] == 0o400
    assert m.get("readOnly") is True
    assert vol["secret"]["secretName"] == the("Secret")["metadata"]["name"]
    secret = the("Secret")
    assert "ZENKEY_" not in yaml.safe_dump(secret).replace(
        "ZENKEY_REPLACE", ""), "a real-looking key in the template"
    live = " ".join(c["livenessProbe"]["exec"]["command"])
    assert "zenmlfs status " + HOST_DIR + "/zen" in live
    # Ready only while the token is served; a starting daemon (nothing
    # mounted while its server does not answer) is not restarted.
    ready = " ".join(c["readinessProbe"]["exec"]["command"])
    assert "zenmlfs status " + HOST_DIR + "/zen" in ready
    assert "test $? -le 1" in ready
    assert c["startupProbe"]["failureThreshold"] * \
        c["startupProbe"]["periodSeconds"] >= 600
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[0] == "fusermount3" and pre[-1] == HOST_DIR + "/zen"
    assert pre[1].startswith("-u")
    assert "Bidirectional" not in yaml.safe_dump(the("Pod"))

    pod = the("Pod")
    (pc,) = pod["spec"]["containers"]
    pmounts = volume_mounts(pc, pod["spec"]["volumes"])
    (path, (vol, m)), = [(p, vm) for p, vm in pmounts.items()
                         if "hostPath" in vm[0]]
    assert vol["hostPath"]["path"] == HOST_DIR
    assert m["mountPropagation"] == "HostToContainer"
    assert m.get("readOnly") is True
    # the workload runs through zenmlfs exec on the mount under the bind
    cmd = pc.get("command", []) + pc.get("args", [])
    assert cmd[:4] == ["zenmlfs", "exec", "--mount", path + "/zen"], cmd
    psc = pc.get("securityContext", {})
    assert not psc.get("privileged")
    assert psc.get("allowPrivilegeEscalation") is False


def k8s_secret_volume(d, files):
    """A Secret volume as the kubelet lays it out: a timestamped folder,
    the ..data link to it, and each key a link through ..data; mode
    0400, root's."""
    ts = os.path.join(d, "..2030_01_01_00_00_00.000000001")
    os.mkdir(ts, 0o755)
    for name, content in files.items():
        p = os.path.join(ts, name)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.symlink(os.path.join("..data", name), os.path.join(d, name))
    os.symlink(os.path.basename(ts), os.path.join(d, "..data"))


def test_daemonset_command_mounts_for_real(zenml_server, service_account,
                                           host_layout, tmp_path):
    """The DaemonSet's container command, args, probe and preStop, taken
    from the YAML with only the host folder, the Secret's folder and the
    URL replaced, run here against the real server: first over a dead
    mount that a daemon killed as its container's PID 1 left behind (the
    command clears it), then the mount serves the token, the liveness
    command passes, the preStop unmounts, the daemon exits 0, and the
    liveness command then fails."""
    ds, spec, c = daemon_container()
    h = host_layout(service_account.key)
    secret_mount = [m["mountPath"] for m in c["volumeMounts"]
                    if m["name"] == next(v["name"] for v in spec["volumes"]
                                         if "secret" in v)][0]
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    k8s_secret_volume(str(secret_dir), {
        k: service_account.key + "\n"
        for k in the("Secret").get("stringData", {})})

    def subst(words):
        out = []
        for w in words:
            w = w.replace(HOST_DIR, h.dir)
            w = w.replace(secret_mount, str(secret_dir))
            w = w.replace(EXAMPLE_URL, zenml_server.url)
            out.append(w)
        return out

    env = _base_env(h.home)
    env["PATH"] = os.path.dirname(ZENMLFS_BIN) + ":" + env["PATH"]
    for e in c.get("env", []):
        env[e["name"]] = subst([e["value"]])[0]
    cmd = subst(c.get("command", []) + c.get("args", []))
    assert not any("ZENKEY_" in w for w in cmd), "a key in argv"

    # What a crash in a container leaves: the daemon was PID 1 of its
    # PID namespace, so the auto_unmount helper died with it.
    pid1 = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", ZENMLFS_BIN, "-f",
         "--url", zenml_server.url, "--api-key-file", h.key_file,
         "-o", OPTS, h.mnt], env=_base_env(h.home),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(h.mnt):
            assert time.monotonic() < deadline and pid1.poll() is None
            time.sleep(0.02)
        tok_dead = read_file(os.path.join(h.mnt, "token")).decode()
        child = int(run(["pgrep", "-P", str(pid1.pid)]).stdout.split()[0])
        os.kill(child, signal.SIGKILL)
        pid1.wait(10)
        time.sleep(0.3)
        assert is_mounted(h.mnt)
        with pytest.raises(OSError) as ei:
            os.listdir(h.mnt)
        assert ei.value.errno == errno.ENOTCONN
    finally:
        if pid1.poll() is None:
            pid1.kill()
            pid1.wait(10)

    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        deadline = time.monotonic() + 30
        while True:
            # A dead mount may still serve its cached token for a moment:
            # wait for a live one (listdir asks the daemon).
            try:
                os.listdir(h.mnt)
                tok = read_file(os.path.join(h.mnt, "token")).decode()
                break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
            assert time.monotonic() < deadline, "no token through the mount"
            time.sleep(0.05)
        assert valid_jwt(tok, zenml_server.jwt_secret)
        # A token of the new daemon (it reuses the kept session, so it
        # mints within a second of the old one: a server that puts no iat
        # in its tokens, before 0.96.2, then mints the same token).
        if "iat" in jwt_claims(tok_dead):
            assert tok != tok_dead
        assert mounts_at(h.mnt) == 1, "the dead mount is still below"
        st = os.stat(os.path.join(h.mnt, "token"))
        assert stat.S_IMODE(st.st_mode) & 0o004, "others cannot read token"

        live = subst(c["livenessProbe"]["exec"]["command"])
        r = run(live, env=env, timeout=30)
        assert r.returncode == 0, r.stdout
        pre = subst(c["lifecycle"]["preStop"]["exec"]["command"])
        r = run(pre, env=env, timeout=30)
        assert r.returncode == 0, r.stdout
        assert proc.wait(EXIT_TIMEOUT) == 0
        assert not is_mounted(h.mnt)
        r = run(live, env=env, timeout=30)
        assert r.returncode != 0, "liveness passes with no mount"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
        _fusermount_u(h.mnt)
    out = (tmp_path / "daemon.log").read_text()
    assert ": error:" not in out, out


# ------------------------------------------------- after the daemon


@pytest.mark.parametrize("attrs", ["cached", "expired"])
def test_new_daemon_replaces_a_dead_mount(zenml_server, service_account,
                                          host_layout, attrs):
    """A dead zenmlfs mount at the mount point (no auto_unmount helper
    left) is replaced by the next daemon: at once, while the kernel still
    has the root's attributes (found by statfs), and once they expired
    (the path itself then fails with ENOTCONN)."""
    h = host_layout(service_account.key)
    a = h.start(OPTS + ",no_auto_unmount")
    a.stop(signal.SIGKILL)
    assert is_mounted(h.mnt)
    if attrs == "expired":
        deadline = time.monotonic() + 15
        while True:
            try:
                os.stat(h.mnt)
            except OSError as e:
                assert e.errno == errno.ENOTCONN, e
                break
            assert time.monotonic() < deadline, "root attributes cached"
            time.sleep(0.2)
    h.start()
    assert valid_jwt(h.token(), zenml_server.jwt_secret)


def test_file_bind_fails_soon_after_the_daemon_exits(
        zenml_server, service_account, host_layout, tmp_path):
    h = host_layout(service_account.key)
    a = h.start()
    target = tmp_path / "token"
    target.touch()
    subprocess.run(["mount", "--bind", os.path.join(h.mnt, "token"),
                    str(target)], check=True)
    try:
        tok = read_file(str(target))
        assert a.stop(signal.SIGTERM) == 0
        deadline = time.monotonic() + ATTR_TIMEOUT + 2
        while time.monotonic() < deadline:
            try:
                # open+read, no fstat: what busybox cat and head do
                fd = os.open(str(target), os.O_RDONLY)
                try:
                    data = os.read(fd, 4096)
                finally:
                    os.close(fd)
            except OSError:
                return
            assert data == tok
            time.sleep(0.2)
        pytest.fail("the old token is still served %d s after the daemon "
                    "exited" % (ATTR_TIMEOUT + 2))
    finally:
        run(["umount", "-l", str(target)])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-s"]))
