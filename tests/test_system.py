"""zenmlfs as a system component, as an administrator meets it: what
`meson install` puts where, the man page, mount(8) and fstab through the
mount helpers, systemd's notify protocol and unit, signals (SIGHUP key
rotation, a clean SIGTERM, only its own mount unmounted), the refusal of
a second mount and of a key file others can read.

mount(8) looks for its helpers in /sbin only, so the tests that run it do
so in a private mount namespace where /usr/sbin is an overlay that adds
mount.fuse.zenmlfs: the system itself is never changed.
"""

import errno
import json
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

from conftest import (REPO, TMP_PREFIX, ZENMLFS_BIN, is_mounted, nobody_op,
                      read_file, run_zenmlfs)
from zenserver import clean_env, jwt_claims

BUILD = os.path.dirname(os.path.realpath(ZENMLFS_BIN))
MAN = os.path.join(BUILD, "dist", "zenmlfs.1")
UNIT = "zenmlfs@.service"


def _tmpdir(tag):
    d = tempfile.mkdtemp(prefix=TMP_PREFIX + tag + "-", dir="/tmp")
    os.chmod(d, 0o755)
    return d


def _key_file(d, key, mode=0o600, name="api-key"):
    path = os.path.join(d, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, mode)
    return path


def _mnt(d, name="mnt"):
    p = os.path.join(d, name)
    os.mkdir(p)
    os.chmod(p, 0o755)
    return p


def _daemon_pid(log_path):
    """The daemon's pid, from its log lines ("zenmlfs[PID]: ...")."""
    try:
        with open(log_path, errors="replace") as f:
            m = re.search(r"zenmlfs\[(\d+)\]", f.read())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait(cond, timeout=20.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def _log(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _errors(text):
    return [ln for ln in text.splitlines() if ": error:" in ln]


def _check_token(server, sa, token):
    """The token is a JWT of the service account that the server accepts
    (an independent HTTP call)."""
    assert token.count(".") == 2 and not token.endswith("\n"), token[:40]
    assert jwt_claims(token)["sub"] == sa.id
    r = server.current_user(token)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == sa.name


def _stop_background_daemon(log_path, mnt):
    """Unmount a daemon that went to the background and wait for it to
    exit; returns its pid (None if it never logged one)."""
    pid = _daemon_pid(log_path)
    if is_mounted(mnt):
        subprocess.run(["fusermount3", "-u", mnt], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    if pid and not _wait(lambda: not _alive(pid), 20):
        os.kill(pid, signal.SIGKILL)
    if is_mounted(mnt):
        subprocess.run(["fusermount3", "-uz", mnt])
    return pid


def _help():
    r = subprocess.run([ZENMLFS_BIN, "--help"], stdout=subprocess.PIPE,
                       text=True, env=clean_env())
    assert r.returncode == 0
    return r.stdout


def _help_words():
    """Every long flag, every -o option and every word --help names as
    accepted."""
    text = _help()
    longs = set(re.findall(r"(--[a-z][a-z-]+)", text))
    mount_opts = set()
    section = text.split("mount options (-o):", 1)[1]
    for line in section.split("  and the kernel's")[0].splitlines():
        m = re.match(r"  ([a-z_]+)(=[A-Z]+)?\s", line)
        if m:
            mount_opts.add(m.group(1) + ("=" if m.group(2) else ""))
    tail = section.split("and the kernel's", 1)[1].split("exit status")[0]
    words = set(re.findall(r"x-\*|[a-z_]+=?", tail)) - {
        "and", "are", "accepted", "ignored", "fstab", "s"}
    return longs, mount_opts, words


def _man_text():
    r = subprocess.run(["man", "-l", MAN], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True,
                       env=clean_env({"MANWIDTH": "200", "MAN_KEEP_FORMATTING":
                                      "", "LC_ALL": "C.UTF-8"}))
    assert r.returncode == 0, r.stderr
    # man's output as plain text: no backspace overstrikes
    return re.sub(r".\x08", "", r.stdout)


def _install(destdir):
    """meson install of build/ into destdir; returns (prefix, {relative
    path: lstat}) of everything installed."""
    r = subprocess.run(["meson", "install", "-C", BUILD, "--destdir",
                        destdir, "--no-rebuild", "--quiet"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    assert r.returncode == 0, r.stdout
    files = {}
    for root, dirs, names in os.walk(destdir):
        for n in names:
            p = os.path.join(root, n)
            files["/" + os.path.relpath(p, destdir)] = os.lstat(p)
    return files


def _build_options():
    r = subprocess.run(["meson", "introspect", BUILD, "--buildoptions"],
                       stdout=subprocess.PIPE, text=True, check=True)
    return {o["name"]: o["value"] for o in json.loads(r.stdout)}


# ------------------------------------------------------------- meson install


@pytest.fixture(scope="module")
def installed():
    """build/ installed into a DESTDIR: (destdir, files, options)."""
    d = _tmpdir("destdir")
    try:
        yield d, _install(d), _build_options()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_meson_install_file_list(installed):
    """meson install gives exactly the binary, the man page (also as
    mount.fuse.zenmlfs(8)), the unit and the mount helper link, under the
    configured prefix, and the links resolve inside the DESTDIR."""
    d, files, o = installed
    prefix = o["prefix"]
    unitdir = o["systemdsystemunitdir"] or (
        "/lib/systemd/system" if prefix == "/usr"
        else prefix + "/lib/systemd/system")
    binary = os.path.join(prefix, o["bindir"], "zenmlfs")
    helper = os.path.join(prefix, o["sbindir"], "mount.fuse.zenmlfs")
    man = os.path.join(prefix, o["mandir"], "man1", "zenmlfs.1")
    man8 = os.path.join(prefix, o["mandir"], "man8", "mount.fuse.zenmlfs.8")
    unit = os.path.join(unitdir, UNIT)
    assert sorted(files) == sorted([binary, helper, man, man8, unit])
    assert os.path.realpath(d + man8) == os.path.realpath(d + man)

    assert stat.S_ISREG(files[binary].st_mode)
    assert files[binary].st_mode & 0o111
    assert stat.S_ISLNK(files[helper].st_mode)
    target = os.readlink(d + helper)
    assert not target.startswith("/"), "link should be relative: " + target
    assert os.path.realpath(d + helper) == os.path.realpath(d + binary)
    r = subprocess.run([d + helper, "--version"], stdout=subprocess.PIPE,
                       text=True)
    assert r.returncode == 0 and r.stdout.startswith("zenmlfs ")

    with open(d + unit) as f:
        text = f.read()
    assert "ExecStart=%s -f " % binary in text
    assert "@BINDIR@" not in text
    with open(d + man, "rb") as f:
        assert f.read() == open(MAN, "rb").read()


def test_unit_passes_systemd_analyze_verify(installed):
    """systemd-analyze verify accepts the installed unit for an instance,
    with the binary and the man page at their installed paths (an
    overlay in a private mount namespace puts them there)."""
    d, files, o = installed
    bindir = os.path.join(o["prefix"], o["bindir"])
    unit = [p for p in files if p.endswith("/" + UNIT)][0]
    mandir = os.path.join(d + o["prefix"], o["mandir"])
    script = textwrap.dedent("""\
        set -e
        mount -t overlay overlay -o lowerdir="$1$2":"$2" "$2"
        SYSTEMD_UNIT_PATH="$3": MANPATH="$4" \
            systemd-analyze verify zenmlfs@var-lib-zenmlfs-zen.service
        """)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh",
                        "-c", script, "sh", d, bindir,
                        os.path.dirname(d + unit), mandir],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout


def test_unit_settings(installed):
    """The unit: Type=notify, the daemon as main process, the key as a
    systemd credential and never in the environment or argv, settings
    from /etc/zenmlfs/INSTANCE.conf, and no directive that would give it a
    mount namespace of its own (the mount would never reach the host)."""
    d, files, o = installed
    unit = [p for p in files if p.endswith("/" + UNIT)][0]
    with open(d + unit) as f:
        lines = [ln.strip() for ln in f if not ln.startswith("#")]
    kv = {}
    for ln in lines:
        k, sep, v = ln.partition("=")
        if sep:
            kv.setdefault(k, []).append(v)
    assert kv["Type"] == ["notify"]
    assert kv["NotifyAccess"] == ["main"]
    assert kv["LoadCredential"] == ["api-key:/etc/zenmlfs/%i.key"]
    assert kv["EnvironmentFile"] == ["/etc/zenmlfs/%i.conf"]
    start = kv["ExecStart"][0].split()
    assert start[1] == "-f" and start[-1] == "%f"
    assert not any("KEY" in v for v in kv.get("Environment", []))
    assert "ExecReload" in kv and "-HUP" in kv["ExecReload"][0]
    for k in ("ProtectSystem", "ProtectHome", "PrivateTmp",
              "PrivateDevices", "PrivateMounts", "ProtectKernelTunables",
              "ProtectKernelModules", "ProtectKernelLogs",
              "ProtectControlGroups", "ProtectProc", "ProcSubset",
              "ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem",
              "PrivateIPC", "DynamicUser", "PrivateUsers", "RootDirectory"):
        assert k not in kv, k
    assert kv["NoNewPrivileges"] == ["yes"]
    assert kv["CapabilityBoundingSet"] == ["CAP_SYS_ADMIN"]
    assert kv["DeviceAllow"] == ["/dev/fuse rw"]
    assert kv["RestrictNamespaces"] == ["mnt"]
    # A fleet's restart: the OOM killer takes the daemon last, the API
    # key's session survives the restart, and startup has no deadline
    # (the daemon retries a server that does not answer).
    assert int(kv["OOMScoreAdjust"][0]) < 0
    assert kv["StateDirectory"] == ["zenmlfs/state"]
    assert kv["TimeoutStartSec"] == ["infinity"]


# --------------------------------------------------------------- man page


def test_man_page_lint_clean():
    """The man page passes mandoc's lint at every level and groff's
    warnings."""
    assert os.path.exists(MAN), "no man page: is go-md2man installed?"
    r = subprocess.run(["mandoc", "-Tlint", "-Wall", MAN],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    assert r.returncode == 0 and not r.stdout, r.stdout
    r = subprocess.run(["groff", "-ww", "-z", "-t", "-man", MAN],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    assert r.returncode == 0 and not r.stdout, r.stdout


def test_man_page_sections():
    """man zenmlfs shows the sections an administrator looks for, with
    examples for a container, fstab and systemd."""
    text = _man_text()
    heads = [ln for ln in text.splitlines() if re.match(r"^[A-Z]", ln)]
    for h in ("NAME", "SYNOPSIS", "DESCRIPTION", "THE TREE", "OPTIONS",
              "ENVIRONMENT", "FILES", "EXIT STATUS", "SIGNALS", "SECURITY",
              "EXAMPLES", "SEE ALSO"):
        assert h in heads, (h, heads)
    assert re.search(r"^NAME\n\s+zenmlfs - mount", text, re.M)
    ex = text.split("\nEXAMPLES\n", 1)[1].split("\nSEE ALSO\n")[0]
    assert "docker run" in ex
    assert "fuse.zenmlfs" in ex and "_netdev,nofail" in ex
    assert "systemctl enable --now zenmlfs@" in ex
    assert re.search(r"^ZENMLFS\(1\)", text, re.M)


def test_man_page_covers_every_option_in_help():
    """Every long flag and -o option that --help lists, and every word it
    says is accepted, is in the man page."""
    text = _man_text()
    longs, mount_opts, words = _help_words()
    assert {"--url", "--api-key-file", "--cafile", "--log", "--foreground",
            "--debug", "--help", "--version"} <= longs
    assert len(mount_opts) >= 19 and "url=" in mount_opts
    assert {"_netdev", "nofail", "dirsync", "x-*"} <= words
    missing = []
    for w in sorted(longs | mount_opts | words):
        pat = re.escape(w.rstrip("*")) if w != "x-*" else r"x-"
        if not re.search(r"(?<![\w-])" + pat, text):
            missing.append(w)
    assert not missing, "not in the man page: %s" % missing


def test_man_page_is_made_from_docs(tmp_path):
    """docs/zenmlfs.md is the man page's one source: the installed page
    is what dist/md2man makes of it now, and every option the man page
    lists is in the Markdown."""
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(
        int(os.stat(os.path.join(REPO, "docs", "zenmlfs.md")).st_mtime)))
    out = str(tmp_path / "zenmlfs.1")
    version = subprocess.run([ZENMLFS_BIN, "--version"], text=True,
                             stdout=subprocess.PIPE).stdout.split()[1]
    subprocess.run([os.path.join(REPO, "dist", "md2man"),
                    shutil.which("go-md2man"),
                    os.path.join(REPO, "docs", "zenmlfs.md"), out, version],
                   check=True, env=env)
    with open(out) as f:
        fresh = f.read()
    with open(MAN) as f:
        built = f.read()
    strip = re.compile(r'^\.TH .*$', re.M)   # the date may differ
    assert strip.sub("", fresh) == strip.sub("", built), \
        "build/dist/zenmlfs.1 is stale: run ninja"
    with open(os.path.join(REPO, "docs", "zenmlfs.md")) as f:
        md = f.read()
    longs, mount_opts, words = _help_words()
    missing = [w for w in sorted(longs | mount_opts)
               if "`" + w not in md and w + "`" not in md]
    assert not missing, missing


# ---------------------------------------------------- mount(8) and helpers


def test_mount_fuse3_helper(zenml_server, service_account):
    """/sbin/mount.fuse3 SOURCE MNT -t fuse.zenmlfs -o ... (what mount(8)
    falls back on) runs `zenmlfs SOURCE MNT -o ...` from PATH; every
    setting comes as -o (url=, api_key_file=, cafile=, log=); it returns
    once the token is readable, by another user too."""
    d = _tmpdir("mf3")
    mnt = _mnt(d)
    log = os.path.join(d, "zenmlfs.log")
    kf = _key_file(d, service_account.key)
    opts = ("url=%s,api_key_file=%s,cafile=/etc/ssl/certs/"
            "ca-certificates.crt,log=%s,allow_other,token_mode=0444"
            % (zenml_server.url, kf, log))
    env = clean_env({"PATH": BUILD + ":/usr/bin:/bin", "HOME": d})
    try:
        r = subprocess.run(["/sbin/mount.fuse3", "zenmlfs", mnt, "-t",
                            "fuse.zenmlfs", "-o", opts],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env=env,
                           timeout=60)
        assert r.returncode == 0, r.stdout + _log(log)
        # no wait: the helper returned, so the token is there
        tok = read_file(os.path.join(mnt, "token")).decode()
        _check_token(zenml_server, service_account, tok)
        other = nobody_op("read", os.path.join(mnt, "token"))
        assert other["errno"] is None and other["out"] == tok
        fm = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", mnt],
                            stdout=subprocess.PIPE, text=True).stdout.split()
        assert fm == ["fuse.zenmlfs", zenml_server.url]
    finally:
        pid = _stop_background_daemon(log, mnt)
    assert not is_mounted(mnt)
    assert pid and "unmounted '%s'" % mnt in _log(log)
    assert not _errors(_log(log))
    shutil.rmtree(d, ignore_errors=True)


# The driver that runs inside the private mount namespace: mount(8) with
# /usr/sbin overlaid by a folder holding mount.fuse.zenmlfs, and libmount's
# utab (where it keeps _netdev and the like) in the test's folder, /run/mount
# on a tmpfs of its own.  Prints one JSON object.
NS_DRIVER = r"""
import json, os, re, subprocess, sys, time
sbin, url, key, d = sys.argv[1:5]
subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                "lowerdir=%s:/usr/sbin" % sbin, "/usr/sbin"], check=True)
if os.path.isdir("/run/mount"):
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/mount"],
                   check=True)
env = {"PATH": "/usr/bin:/bin", "LIBMOUNT_UTAB": os.path.join(d, "utab")}
out = {}

def pid_of(log):
    try:
        m = re.search(r"zenmlfs\[(\d+)\]", open(log).read())
    except OSError:
        return None
    return int(m.group(1)) if m else None

def case(name, cmd, mnt, log):
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60, env=env)
    res = {"rc": r.returncode, "stderr": r.stderr, "pid": pid_of(log)}
    if r.returncode == 0:
        res["token"] = open(os.path.join(mnt, "token")).read()
        res["findmnt"] = subprocess.run(
            ["findmnt", "-n", "-o", "FSTYPE,SOURCE", mnt],
            capture_output=True, text=True).stdout.split()
        other = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "cat", os.path.join(mnt, "token")],
            capture_output=True, text=True)
        res["other"] = other.stdout
        if res["pid"]:
            with open("/proc/%d/cmdline" % res["pid"], "rb") as f:
                res["argv0"] = f.read().split(b"\0")[0].decode()
        u = subprocess.run(["umount", mnt], capture_output=True, text=True,
                           env=env)
        res["umount"] = u.returncode
        pid = res["pid"]
        for _ in range(400):
            if not pid or not os.path.exists("/proc/%d" % pid):
                break
            time.sleep(0.05)
        res["exited"] = not pid or not os.path.exists("/proc/%d" % pid)
        res["mounted_after"] = subprocess.run(
            ["findmnt", mnt], capture_output=True).returncode == 0
    out[name] = res

m1, m2, m3 = (os.path.join(d, n) for n in ("m1", "m2", "m3"))
l1, l2, l3 = (os.path.join(d, n + ".log") for n in ("l1", "l2", "l3"))
opts = "allow_other,token_mode=0444,api_key_file=" + key
case("mount_t", ["mount", "-t", "fuse.zenmlfs", url, m1,
                 "-o", opts + ",log=" + l1], m1, l1)
fstab = os.path.join(d, "fstab")
with open(fstab, "w") as f:
    f.write("# a temporary fstab\n%s %s fuse.zenmlfs %s,log=%s,_netdev,"
            "nofail,x-systemd.mount-timeout=infinity 0 0\n"
            % (url, m2, opts, l2))
case("fstab", ["mount", "-v", "-T", fstab, m2], m2, l2)
case("unknown", ["mount", "-t", "fuse.zenmlfs", url, m3,
                 "-o", opts + ",log=" + l3 + ",bogus"], m3, l3)
print(json.dumps(out))
"""


def test_mount_t_and_fstab_through_mount8(zenml_server, service_account):
    """mount -t fuse.zenmlfs URL MNT -o api_key_file=...,allow_other,
    token_mode=0444 works through /sbin/mount.fuse.zenmlfs, and so does
    the same line in an fstab with _netdev,nofail (mount -T); both
    return once the token is readable by another user, and umount stops
    the daemon.  An unknown option fails with one line, not the help."""
    d = _tmpdir("mnt8")
    sbin = os.path.join(d, "sbin")
    os.mkdir(sbin)
    os.symlink(os.path.realpath(ZENMLFS_BIN),
               os.path.join(sbin, "mount.fuse.zenmlfs"))
    for n in ("m1", "m2", "m3"):
        _mnt(d, n)
    kf = _key_file(d, service_account.key)
    drv = os.path.join(d, "driver.py")
    with open(drv, "w") as f:
        f.write(NS_DRIVER)
    try:
        r = subprocess.run(["unshare", "-m", "--propagation", "private",
                            sys.executable, drv, sbin, zenml_server.url, kf,
                            d], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
    finally:
        # a daemon left running holds its private namespace: end it
        for n in ("l1", "l2", "l3"):
            pid = _daemon_pid(os.path.join(d, n + ".log"))
            if pid and _alive(pid):
                os.kill(pid, signal.SIGTERM)
                _wait(lambda: not _alive(pid), 10)
    for name in ("mount_t", "fstab"):
        c = res[name]
        log = _log(os.path.join(d, {"mount_t": "l1",
                                    "fstab": "l2"}[name] + ".log"))
        assert c["rc"] == 0, (name, c, log)
        _check_token(zenml_server, service_account, c["token"])
        assert c["other"] == c["token"]
        assert c["findmnt"] == ["fuse.zenmlfs", zenml_server.url]
        assert c["argv0"] == "/sbin/mount.fuse.zenmlfs"   # our helper
        assert c["umount"] == 0 and c["exited"] and not c["mounted_after"]
        assert "unmounted" in log and not _errors(log), log
    c = res["unknown"]
    assert c["rc"] == 1, c
    assert c["stderr"].splitlines() == [
        "zenmlfs: unknown mount option 'bogus'",
        "Try 'zenmlfs --help'."], c["stderr"]
    shutil.rmtree(d, ignore_errors=True)


def test_unknown_option_is_one_line(zenml_server):
    """An unknown -o option, called as zenmlfs or as mount.fuse.zenmlfs,
    fails with exit 1 and one line (and the hint), never the help."""
    d = _tmpdir("unk")
    mnt = _mnt(d)
    link = os.path.join(d, "mount.fuse.zenmlfs")
    os.symlink(os.path.realpath(ZENMLFS_BIN), link)
    try:
        for cmd in ([ZENMLFS_BIN, "-o", "allow_other,frobnicate",
                     zenml_server.url, mnt],
                    [link, zenml_server.url, mnt, "-o",
                     "rw,frobnicate,_netdev"]):
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True,
                               env=clean_env(), timeout=30)
            assert r.returncode == 1, r
            assert r.stderr.splitlines() == [
                "zenmlfs: unknown mount option 'frobnicate'",
                "Try 'zenmlfs --help'."], r.stderr
            assert r.stdout == ""
            assert not is_mounted(mnt)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------- systemd


class NotifySocket:
    """A NOTIFY_SOCKET datagram socket (a path, or "@name" abstract), with
    the sender's credentials on every message (SO_PASSCRED), as systemd
    has them.  on_ready(pid) runs the moment a READY=1 arrives from pid;
    every message is kept as (time, pid, text, on_ready's result)."""

    def __init__(self, d, abstract, on_ready):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "zenmlfs-test-%d-%s" % (os.getpid(),
                                           os.path.basename(d))
            self.sock.bind("\0" + name)
            self.addr = "@" + name
        else:
            self.addr = os.path.join(d, "notify.sock")
            self.sock.bind(self.addr)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.on_ready = on_ready
        self.messages = []
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        creds = socket.CMSG_SPACE(struct.calcsize("iII"))
        while not self._stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, creds)
            except socket.timeout:
                continue
            except OSError:
                return
            pid = None
            for level, kind, blob in anc:
                if level == socket.SOL_SOCKET and \
                        kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", blob[:12])[0]
            lines = data.decode().split("\n")
            seen = self.on_ready(pid) if "READY=1" in lines else None
            self.messages.append((time.monotonic(), pid, lines, seen))
            if seen is not None:
                self.ready.set()
            if "STOPPING=1" in lines:
                self.stopping.set()

    def close(self):
        self._stop = True
        self.thread.join(5)
        self.sock.close()


def _mountpoint_of(pid):
    """The MOUNTPOINT argument (the last) of process pid."""
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().rstrip(b"\0").split(b"\0")[-1].decode()


@pytest.mark.parametrize("abstract", [False, True],
                         ids=["path", "abstract"])
def test_notify_ready_only_once_token_is_readable(zenml_server,
                                                  service_account, mount,
                                                  abstract):
    """With NOTIFY_SOCKET set (what Type=notify does), READY=1 comes from
    the daemon's main process, with STATUS=state: ok, and only when
    MNT/token can be read: the listener reads the token the moment READY=1
    arrives, and no message before it said READY.  SIGTERM sends
    STOPPING=1, unmounts and exits 0."""
    d = _tmpdir("notify")

    def on_ready(pid):
        mnt = _mountpoint_of(pid)
        res = {"mnt": mnt, "mounted": is_mounted(mnt)}
        try:
            res["token"] = read_file(os.path.join(mnt, "token")).decode()
        except OSError as e:
            res["errno"] = errno.errorcode.get(e.errno, e.errno)
        return res

    ns = NotifySocket(d, abstract, on_ready)
    try:
        m = mount(service_account.key, env_extra={"NOTIFY_SOCKET": ns.addr})
        assert ns.ready.wait(20), ns.messages
        ready = [x for x in ns.messages if x[3] is not None]
        assert len(ready) == 1, ns.messages
        t, pid, lines, seen = ready[0]
        assert pid == m.proc.pid          # NotifyAccess=main would take it
        assert seen["mnt"] == m.path
        assert "errno" not in seen, "READY=1 before the token was " \
            "readable: %s" % seen
        assert seen["mounted"]
        _check_token(zenml_server, service_account, seen["token"])
        assert "STATUS=state: ok" in lines
        assert not [x for x in ns.messages if x[0] < t and "READY=1" in x[2]]
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(20) == 0
        assert ns.stopping.wait(5), ns.messages
        assert not is_mounted(m.path)
        assert "unmounted '%s'" % m.path in m.log()
    finally:
        ns.close()
        shutil.rmtree(d, ignore_errors=True)


def test_log_to_the_journal_carries_priorities(zenml_server,
                                               service_account):
    """When standard error is the journal (JOURNAL_STREAM names its
    device and inode, as systemd sets it), each line is "<N>LEVEL: msg"
    with the syslog priority and without the time or the name, which the
    journal adds itself; elsewhere lines keep both."""
    d = _tmpdir("journal")
    mnt = _mnt(d)
    kf = _key_file(d, service_account.key)
    err_path = os.path.join(d, "stderr")
    err = open(err_path, "wb")
    st = os.fstat(err.fileno())
    env = clean_env({"HOME": d})
    env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
    proc = subprocess.Popen(
        [ZENMLFS_BIN, "-f", "--url", zenml_server.url, "--api-key-file", kf,
         mnt], stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
    err.close()
    try:
        assert _wait(lambda: is_mounted(mnt) and
                     b"mounted" in open(err_path, "rb").read(), 30), \
            _log(err_path)
        read_file(os.path.join(mnt, "token"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        lines = _log(err_path).splitlines()
        assert lines, "nothing logged"
        for ln in lines:
            assert re.match(r"^<[0-7]>(error|warning|info|debug): ", ln), ln
        assert any(ln.startswith("<6>info: mounted ") for ln in lines), lines
        assert any(ln.startswith("<6>info: unmounted ") for ln in lines), \
            lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", mnt])
        shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------- signals


def test_sighup_rotated_key(zenml_server, service_account, mount):
    """The daemon's own key is rotated over REST by the admin (retain 0:
    the old key dies at once), the new key is written to the key file,
    SIGHUP: the daemon logs in with it without unmounting, and the tokens
    it serves are valid while the old key no longer logs in."""
    sa = service_account
    m = mount(sa.key)
    kf = os.path.join(m.workdir, "api-key")
    before = m.text("token")
    _check_token(zenml_server, sa, before)
    dev = os.stat(m.path).st_dev

    new_key = zenml_server.rotate_api_key(sa.id, sa.key_id,
                                          retain_minutes=0)["body"]["key"]
    assert new_key != sa.key
    assert zenml_server.login("zenml-api-key", sa.key).status_code == 401
    with open(kf, "w") as f:          # same file, same 0600 mode
        f.write(new_key + "\n")
    assert stat.S_IMODE(os.stat(kf).st_mode) == 0o600

    m.proc.send_signal(signal.SIGHUP)
    assert _wait(lambda: "SIGHUP: logged in again with the API key file"
                 in m.log(), 20), m.log()
    assert m.proc.poll() is None and is_mounted(m.path)
    assert os.stat(m.path).st_dev == dev       # the same mount
    # The new token is published just after the log line (a rename
    # through the mount): wait for it.
    assert _wait(lambda: m.text("token") != before, 10)
    after = m.text("token")
    _check_token(zenml_server, sa, after)
    assert m.status()["state"] == "ok"
    # a token minted from now on comes from the new key's session
    m.write("refresh", "1")
    _check_token(zenml_server, sa, m.text("token"))
    assert zenml_server.login("zenml-api-key", sa.key).status_code == 401
    # Other signals leave it running; SIGINT ends it cleanly.
    for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
        m.proc.send_signal(s)
    time.sleep(0.3)
    assert m.proc.poll() is None and is_mounted(m.path)
    m.proc.send_signal(signal.SIGINT)
    assert m.proc.wait(20) == 0
    assert not is_mounted(m.path)


def test_systemd_credential_is_the_key(zenml_server, service_account,
                                       mount):
    """Under systemd the key is the credential $CREDENTIALS_DIRECTORY/api-key
    (LoadCredential=): the daemon mounts with it, never has it in its
    environment, and SIGHUP reads the credential again."""
    sa = service_account
    creds = _tmpdir("creds")
    os.chmod(creds, 0o700)
    cred = _key_file(creds, sa.key, 0o400)
    try:
        m = mount(None, env_extra={"CREDENTIALS_DIRECTORY": creds})
        # "mounted ..." is logged once the token was read back through
        # the mount, which may come just after the mount is up.
        assert _wait(lambda: "from the systemd credential 'api-key'"
                     in m.log(), 10), m.log()
        _check_token(zenml_server, sa, m.text("token"))
        with open("/proc/%d/environ" % m.proc.pid, "rb") as f:
            assert b"ZENKEY_" not in f.read()
        new_key = zenml_server.rotate_api_key(
            sa.id, sa.key_id, retain_minutes=0)["body"]["key"]
        os.chmod(cred, 0o600)
        _key_file(creds, new_key, 0o400)
        m.proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: "SIGHUP: logged in again with the systemd "
                     "credential 'api-key'" in m.log(), 20), m.log()
        m.write("refresh", "1")
        _check_token(zenml_server, sa, m.text("token"))
    finally:
        shutil.rmtree(creds, ignore_errors=True)


def test_sighup_with_unreadable_key_keeps_serving(zenml_server,
                                                  service_account, mount):
    """A SIGHUP that finds the key file gone or refused (mode 0644) logs
    why and keeps the mount serving with the key it has."""
    m = mount(service_account.key)
    kf = os.path.join(m.workdir, "api-key")
    os.chmod(kf, 0o644)
    m.proc.send_signal(signal.SIGHUP)
    assert _wait(lambda: "SIGHUP" in m.log(), 10), m.log()
    assert "chmod 600" in m.log()
    assert m.proc.poll() is None
    _check_token(zenml_server, service_account, m.text("token"))


# ------------------------------------------------------------- own mount


def test_second_mount_at_the_same_path_is_refused(zenml_server,
                                                  service_account, mount):
    """Mounting where zenmlfs is already mounted fails with "already
    mounted" and exit 5; the first mount keeps working."""
    m = mount(service_account.key)
    kf = os.path.join(m.workdir, "api-key")
    for args in (["--api-key-file", kf, zenml_server.url, m.path],
                 ["-f", "--api-key-file", kf, zenml_server.url, m.path]):
        r = run_zenmlfs(args, timeout=30)
        assert r.returncode == 5, r
        assert "already mounted" in r.stderr, r.stderr
    assert len([ln for ln in open("/proc/self/mountinfo")
                if " %s " % m.path in ln]) == 1
    _check_token(zenml_server, service_account, m.text("token"))


def test_old_daemon_leaves_the_new_mount_alone(zenml_server,
                                               service_account, mount):
    """A daemon whose mount was lazily detached (something still holds
    it) and replaced by a new daemon's mount at the same path, then gets
    SIGTERM: it exits 0 and the new mount keeps serving."""
    old = mount(service_account.key)
    kf = os.path.join(old.workdir, "api-key")
    held = os.open(os.path.join(old.path, "status"), os.O_RDONLY)
    new_log = os.path.join(old.workdir, "new.log")
    new = None
    try:
        subprocess.run(["umount", "-l", old.path], check=True)
        assert not is_mounted(old.path)
        new = subprocess.Popen(
            [ZENMLFS_BIN, "-f", "--log", new_log, "--api-key-file", kf,
             zenml_server.url, old.path],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=clean_env({"HOME": old.workdir}))
        assert _wait(lambda: is_mounted(old.path), 30), _log(new_log)
        _check_token(zenml_server, service_account,
                     read_file(os.path.join(old.path, "token")).decode())

        old.proc.send_signal(signal.SIGTERM)
        assert old.proc.wait(20) == 0, _log(os.path.join(old.workdir,
                                                         "stdio.log"))
        assert "now holds another mount: left as it is" in old.log()
        time.sleep(1.0)      # auto_unmount's fusermount3 had its chance
        assert is_mounted(old.path)
        assert new.poll() is None
        _check_token(zenml_server, service_account,
                     read_file(os.path.join(old.path, "token")).decode())
    finally:
        os.close(held)
        if new is not None:
            if is_mounted(old.path) and new.poll() is None:
                subprocess.run(["fusermount3", "-u", old.path])
            try:
                new.wait(20)
            except subprocess.TimeoutExpired:
                new.kill()
                new.wait()
    assert new.returncode == 0, _log(new_log)
    assert not is_mounted(old.path)
    assert not _errors(_log(new_log))


# ---------------------------------------------------------- key file hygiene


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(zenml_server,
                                                service_account, mode):
    """A key file that its group or others may read or write is refused
    (exit 2) with the chmod that fixes it, before anything is sent."""
    d = _tmpdir("kf")
    mnt = _mnt(d)
    kf = _key_file(d, service_account.key, mode)
    try:
        for args in (["--api-key-file", kf, zenml_server.url, mnt],
                     ["-o", "api_key_file=" + kf, zenml_server.url, mnt]):
            r = run_zenmlfs(args, timeout=30)
            assert r.returncode == 2, r
            assert "chmod 600 '%s'" % kf in r.stderr, r.stderr
            assert "%04o" % mode in r.stderr
            assert not is_mounted(mnt)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_key_file_owned_by_another_user_is_refused(zenml_server,
                                                   service_account):
    """A 0600 key file owned by another non-root user is refused (exit 2),
    saying whose it is and how to fix it."""
    d = _tmpdir("kf")
    mnt = _mnt(d)
    kf = _key_file(d, service_account.key)
    os.chown(kf, 65534, 65534)
    try:
        r = run_zenmlfs(["--api-key-file", kf, zenml_server.url, mnt],
                        timeout=30)
        assert r.returncode == 2, r
        assert "owned by uid 65534" in r.stderr, r.stderr
        assert "chown" in r.stderr
        assert not is_mounted(mnt)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_key_file_that_is_a_directory_is_refused(zenml_server):
    """A key "file" that is a directory is refused (exit 2)."""
    d = _tmpdir("kf")
    mnt = _mnt(d)
    sub = os.path.join(d, "dir")
    os.mkdir(sub, 0o700)
    try:
        r = run_zenmlfs(["--api-key-file", sub, zenml_server.url, mnt],
                        timeout=20)
        assert r.returncode == 2, r
        assert "'%s'" % sub in r.stderr, r.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_key_file_that_is_a_fifo_is_refused(zenml_server):
    """A key "file" that is a FIFO is refused (exit 2) at once: it is
    never opened for a blocking read."""
    d = _tmpdir("kf")
    mnt = _mnt(d)
    fifo = os.path.join(d, "fifo")
    os.mkfifo(fifo, 0o600)
    try:
        r = run_zenmlfs(["--api-key-file", fifo, zenml_server.url, mnt],
                        timeout=5)
        assert r.returncode == 2, r
        assert "not a regular file" in r.stderr, r.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)
