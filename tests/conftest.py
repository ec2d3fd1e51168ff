"""pytest fixtures for zenmlfs: a real ZenML server, service accounts, the
fault proxy, and mounts of the daemon that are always unmounted.

Fixtures and helpers (see each docstring):

    zenml_server      module    ZenServer: .url, .admin_token(), .api(),
                                .stop(), .start(), .log_path, ...; one
                                per session, or the module's own when it
                                sets ZENML_SERVER_CLASS
    service_account   function  ServiceAccount: .name .id .key_name
                                .key_id .key
    mount             function  factory: mount(key, opts="", url=None,
                                env_extra=None, extra_args=(),
                                key_via="file") -> Mount
    admin_mount       function  factory: admin_mount(opts="meta_ttl=1",
                                url=None) -> Mount, logged in as the
                                server's admin (password, no key)
    cleanup           function  Cleanup: service accounts and tags
                                deleted after the test
    proxy             function  FaultProxy in front of zenml_server
    run_zenmlfs(args, env=None, input=None, timeout=60) -> CompletedProcess
    jwt_claims(token) -> dict
    attr(m, rel) -> str  an attribute file's one line,
                      checked
    ZENMLFS_BIN       path of the daemon (env ZENMLFS_BIN overrides)
"""

import atexit
import contextlib
import json
import errno
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from mountlib import read_file  # noqa: E402
from proxy import FaultProxy  # noqa: E402
from zenserver import (ADMIN_ENV, SAS, ServiceAccount,  # noqa: E402
                       ZenServer, clean_env, fake_api_key, free_port,
                       jwt_claims, jwt_header)

__all__ = ["ADMIN_ENV", "SAS", "Cleanup", "attr", "start_mount",
           "finish_mounts", "ZENML_VERSION", "TOKENS_BOUND", "is_mounted", "nobody_op", "os_error", "running_server", "jwt_claims", "jwt_header", "fake_api_key", "free_port",
           "run_zenmlfs", "read_file", "ZENMLFS_BIN", "SANITIZED", "TMP_PREFIX",
           "TOKENS_HAVE_IAT", "distinct_token_gap", "until_asked_again"]

def _zenml_version():
    """The ZenML server's version: the one installed in the venv that runs
    the tests (scripts/test: ZENMLFS_TEST_ZENML picks it)."""
    from importlib.metadata import version
    return tuple(int(x) for x in version("zenml").split(".")[:3])


ZENML_VERSION = _zenml_version()
# From 0.96.3 a minted (generic) token carries its API key's or device's id
# and dies with them; before, it lives until it expires, and only the
# daemon's own check of its credential stops serving it (docs/zenmlfs.md,
# "Server versions").
TOKENS_BOUND = ZENML_VERSION >= (0, 96, 3)
# Before 0.96.2 tokens carry no iat: two minted in the same second are the
# same bytes, and a refresh then publishes nothing new.
TOKENS_HAVE_IAT = ZENML_VERSION >= (0, 96, 2)


def distinct_token_gap():
    """Before a refresh that must give a new token: on a server whose
    tokens have no iat, wait for the next second."""
    if not TOKENS_HAVE_IAT:
        time.sleep(1.02 - time.time() % 1.0)

ZENMLFS_BIN = os.environ.get("ZENMLFS_BIN",
                             os.path.join(REPO, "build", "zenmlfs"))


def _sanitized(path):
    """Whether the daemon under test is an ASan build (scripts/test runs
    one against the oldest server)."""
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


SANITIZED = _sanitized(ZENMLFS_BIN)
# Every mount point lives under /tmp/zenmlfs-t-*; stale ones from a killed
# run are unmounted at session start.
TMP_PREFIX = "zenmlfs-t-"
MOUNT_TIMEOUT = 30.0
EXIT_TIMEOUT = 20.0

_live_mounts = []    # Mount objects not yet torn down (for atexit)


def attr(m, rel):
    """Content of the attribute file MNT/rel, without its newline: exactly
    one line ending in one '\\n', and st_size its length (sizes are exact,
    docs/design.md)."""
    size = os.stat(m.join(rel)).st_size
    s = m.text(rel)
    assert size == len(s.encode()), "%s: st_size %d, %d bytes read" % (
        rel, size, len(s.encode()))
    assert s.endswith("\n"), "%s does not end with a newline: %r" % (rel, s)
    assert "\n" not in s[:-1], "%s has more than one line: %r" % (rel, s)
    return s[:-1]


def _tmpdir(tag):
    """A fresh directory under /tmp, mode 0755 (uid 65534 must be able to
    traverse to a mount point inside it)."""
    d = tempfile.mkdtemp(prefix=TMP_PREFIX + tag + "-", dir="/tmp")
    os.chmod(d, 0o755)
    return d


def _mounted_under(prefix):
    out = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                mp = line.split()[1].replace("\\040", " ")
                if mp.startswith(prefix):
                    out.append(mp)
    except OSError:
        pass
    return out


def is_mounted(path):
    """True if path is a mount point (per /proc/self/mounts, which unlike
    os.path.ismount also sees a mount of the same device)."""
    path = os.path.realpath(path)
    return path in _mounted_under(path) or os.path.ismount(path)


def _fusermount_u(path):
    """Unmount; lazily if a plain unmount keeps failing.  True if done."""
    for _ in range(10):
        if not is_mounted(path):
            return True
        r = subprocess.run(["fusermount3", "-u", path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode == 0:
            return True
        time.sleep(0.2)
    subprocess.run(["fusermount3", "-uz", path],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return not is_mounted(path)


def _base_env(home):
    """Environment for the daemon: no ZENML_* from the developer, and a
    private HOME/XDG dirs so no saved `zenmlfs login` session is found;
    the API key's kept session goes under it too (STATE_DIRECTORY, as
    systemd would set it), never to the machine's /var/lib/zenmlfs."""
    env = clean_env()
    for k in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME",
              "XDG_CACHE_HOME", "XDG_RUNTIME_DIR", "STATE_DIRECTORY"):
        env.pop(k, None)
    env["HOME"] = home
    env["XDG_CONFIG_HOME"] = os.path.join(home, ".config")
    env["STATE_DIRECTORY"] = os.path.join(home, "state")
    return env


def run_zenmlfs(args, env=None, input=None, timeout=60):
    """Run the zenmlfs binary to completion (for refused mounts, --help,
    ...).  ``env``: extra variables on top of a clean environment (no
    ZENML_*, private HOME).  stdin is /dev/null unless ``input`` is given,
    so never a terminal.  Returns CompletedProcess with text stdout/stderr.
    If it is still running at ``timeout`` (e.g. it mounted and stayed in
    the foreground), every mount point among args is unmounted, the
    process killed, and the test fails."""
    home = _tmpdir("home")
    full_env = _base_env(home)
    if env:
        full_env.update(env)
    cmd = [ZENMLFS_BIN] + [str(a) for a in args]
    proc = subprocess.Popen(cmd, env=full_env, text=True,
                            stdin=subprocess.PIPE if input is not None
                            else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        for a in args:
            if isinstance(a, str) and os.path.isdir(a) and is_mounted(a):
                _fusermount_u(a)
        proc.kill()
        out, err = proc.communicate()
        pytest.fail("zenmlfs %s still running after %ss\nstdout: %s\n"
                    "stderr: %s" % (args, timeout, out, err))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


class Mount:
    """A running `zenmlfs -f` and its mount point."""

    def __init__(self, path, proc, log_path, workdir, cmd):
        self.path = path
        self.proc = proc
        self.log_path = log_path
        self.workdir = workdir
        self.cmd = cmd
        self.expect_errors = False   # set True when the test provokes errors
        self.expect_exit = 0         # exit code required at teardown
        self._done = False

    def __truediv__(self, name):
        return os.path.join(self.path, name)

    def join(self, *names):
        return os.path.join(self.path, *names)

    def read(self, name):
        """Bytes of MNT/name (open+read+close)."""
        return read_file(os.path.join(self.path, name))

    def text(self, name):
        return self.read(name).decode()

    def write(self, name, data):
        """open(O_WRONLY|O_TRUNC)+write+close, like `echo data > name`;
        raises OSError with the errno of the failing step."""
        if isinstance(data, str):
            data = data.encode()
        fd = os.open(os.path.join(self.path, name), os.O_WRONLY | os.O_TRUNC)
        try:
            n = os.write(fd, data)
        finally:
            os.close(fd)
        return n

    def status(self):
        """MNT/status parsed into a dict of 'key: value' lines."""
        d = {}
        for line in self.text("status").splitlines():
            k, sep, v = line.partition(":")
            if sep:
                d[k.strip()] = v.strip()
        return d

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def error_lines(self):
        return [ln for ln in self.log().splitlines() if ": error:" in ln]

    def umount(self, timeout=EXIT_TIMEOUT):
        """Unmount and wait for the daemon to exit; returns its exit code
        (None if it had to be killed).  Idempotent."""
        if self._done:
            return self.proc.returncode
        self._done = True
        try:
            _fusermount_u(self.path)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                return None
        finally:
            if self in _live_mounts:
                _live_mounts.remove(self)

    def check_clean_exit(self):
        """After umount(): exit code and log as the test required."""
        rc = self.proc.returncode
        assert not is_mounted(self.path), "still mounted: " + self.path
        assert rc == self.expect_exit, (
            "zenmlfs exited with %r (expected %r); log:\n%s\n"
            "--- stdout/stderr:\n%s"
            % (rc, self.expect_exit, self.log(),
               _read(self.workdir, "stdio.log")))
        if not self.expect_errors:
            errs = self.error_lines()
            assert not errs, "zenmlfs logged errors:\n" + "\n".join(errs)


def start_mount(workdir, url, key, opts="", env_extra=None, extra_args=(),
                key_via="file", timeout=MOUNT_TIMEOUT):
    """Run `zenmlfs -f --log LOG [--url URL] [--api-key-file F] [-o OPTS]
    [extra_args] MNT` in workdir (its mnt/, zenmlfs.log, stdio.log, home/)
    and return the Mount once MNT is a mount point; fail the test if the
    daemon exits first or MNT is not mounted within timeout.  url=None
    passes no --url (e.g. for --pro-api in extra_args)."""
    mnt = os.path.join(workdir, "mnt")
    os.mkdir(mnt)
    os.chmod(mnt, 0o755)
    log_path = os.path.join(workdir, "zenmlfs.log")
    home = os.path.join(workdir, "home")
    os.mkdir(home, 0o700)
    env = _base_env(home)
    cmd = [ZENMLFS_BIN, "-f", "--log", log_path]
    if url is not None:
        cmd += ["--url", url]
    if key is not None:
        if key_via == "file":
            kf = os.path.join(workdir, "api-key")
            fd = os.open(kf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key + "\n")
            cmd += ["--api-key-file", kf]
        elif key_via == "env":
            env["ZENML_STORE_API_KEY"] = key
        else:
            raise ValueError("key_via must be 'file' or 'env'")
    if opts:
        cmd += ["-o", opts]
    cmd += list(extra_args)
    cmd.append(mnt)
    if env_extra:
        env.update(env_extra)
    out = open(os.path.join(workdir, "stdio.log"), "wb")
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=subprocess.STDOUT)
    out.close()
    m = Mount(mnt, proc, log_path, workdir, cmd)
    _live_mounts.append(m)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_mounted(mnt):
            return m
        if proc.poll() is not None:
            m._done = True
            _live_mounts.remove(m)
            pytest.fail("zenmlfs exited with %s before mounting\n"
                        "--- log:\n%s\n--- stdout/stderr:\n%s"
                        % (proc.returncode, m.log(), _read(workdir,
                                                           "stdio.log")))
        time.sleep(0.05)
    m.umount()
    pytest.fail("not mounted after %.0f s\n--- log:\n%s\n--- stdio:\n%s"
                % (timeout, m.log(), _read(workdir, "stdio.log")))


def finish_mounts(made):
    """A mount factory's teardown: unmount every Mount in made, then check
    that each daemon exited as its test required (Mount.check_clean_exit)
    and remove its folder; a mount that fails the check keeps its folder
    and fails the test."""
    failures = []
    for m in made:
        m.umount()
    for m in made:
        try:
            m.check_clean_exit()
        except AssertionError as e:
            failures.append("%s\n(kept %s)" % (e, m.workdir))
            continue
        # Never rmtree into a live mount: it would delete server state.
        if not is_mounted(m.path):
            shutil.rmtree(m.workdir, ignore_errors=True)
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def _read(d, name):
    try:
        with open(os.path.join(d, name), errors="replace") as f:
            return f.read()
    except OSError:
        return ""


@atexit.register
def _atexit_cleanup():
    for m in list(_live_mounts):
        try:
            m.umount(timeout=5)
        except Exception:
            pass


# ---------------------------------------------------------------- fixtures


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test shows the logs of the daemons its fixtures started:
    any fixture value with a diagnostics() method contributes a section."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        diag = getattr(value, "diagnostics", None)
        if callable(diag):
            try:
                text = diag()
            except Exception as e:  # never hide the failure itself
                text = "diagnostics failed: %r" % e
            if text:
                rep.sections.append(("diagnostics: " + name, text))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "long: a long test (minutes), e.g. a load held over "
        "two token lifetimes; -m 'not long' leaves them out")


def pytest_collection_modifyitems(session, config, items):
    """The files that hold a long test first (in their order, the rest
    after in theirs): when the suite is spread over workers by file
    (scripts/test: pytest -n 2 --dist loadfile), the long ones then run
    beside the rest instead of ending the run alone."""
    slow = {item.path for item in items if item.get_closest_marker("long")}
    items.sort(key=lambda item: item.path not in slow)


def pytest_sessionstart(session):
    """Unmount mounts left by a killed run (their daemon is gone, so stat
    says ENOTCONN); live mounts may belong to a concurrent run."""
    for mp in _mounted_under("/tmp/" + TMP_PREFIX):
        try:
            os.stat(mp)
        except OSError as e:
            if e.errno == errno.ENOTCONN:
                _fusermount_u(mp)


# How long the daemon may take to ask the server again once meta_ttl has
# passed: a test's 0.1 s poll, then a lookup or readdir reaching the
# daemon on a loaded machine.  The server's time to answer is not in it.
ASK_SLACK = 1.5
# How long a server under the load of a whole test run may take to answer.
ANSWER_BOUND = 60


def until_asked_again(proxy, since, ttl, fn, what, prefix=SAS):
    """Wait until fn() is true, after a change made on the server at
    `since` (time.monotonic()) that a mount with meta_ttl=ttl, talking
    through proxy, is to show: it asked the server again within meta_ttl
    (its first request under prefix after since came in by since + ttl +
    ASK_SLACK), and fn() is true once that answer is in, however slow
    the server is to give it."""
    end = time.monotonic() + ttl + ASK_SLACK + ANSWER_BOUND
    while not fn():
        if time.monotonic() > end:
            pytest.fail("timed out after %.0f s waiting for %s"
                        % (end - since, what))
        time.sleep(0.1)
    asked = proxy.first_since(prefix, since)
    assert asked is not None and asked - since <= ttl + ASK_SLACK, (
        "%s: the daemon asked the server again %s after the change "
        "(meta_ttl %d s)" % (what, "never" if asked is None else
                             "%.1f s" % (asked - since), ttl))


def os_error(fn):
    """errno of the OSError fn() raises; None if it does not raise."""
    try:
        fn()
    except OSError as e:
        return e.errno
    return None


NOBODY_PY = r"""
import errno, json, os, sys
op, path, data = sys.argv[1], sys.argv[2], sys.argv[3].encode()
res = {"pid": os.getpid(), "errno": None, "out": ""}
try:
    if op == "read":
        with open(path, "rb") as f:
            res["out"] = f.read().decode(errors="replace")
    elif op == "write":
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    elif op == "mkdir":
        os.mkdir(path)
    elif op == "rmdir":
        os.rmdir(path)
except OSError as e:
    res["errno"] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(res))
"""


def nobody_op(op, path, data="", timeout=30):
    """One read/write/mkdir/rmdir as uid/gid 65534 with no groups; returns
    {"pid", "errno" (name or None), "out"}."""
    r = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "/usr/bin/python3", "-c", NOBODY_PY, op, path, data],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
        timeout=timeout, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@contextlib.contextmanager
def running_server(cls=None, prefix="zenmlfs-server-"):
    """A started real ZenML server of class cls (ZenServer by default) in
    a fresh directory; stopped and removed (unless ZENMLFS_KEEP_SERVER_DIR)
    on exit."""
    workdir = tempfile.mkdtemp(prefix=prefix)
    srv = (cls or ZenServer)(workdir)
    try:
        srv.start()
        srv.admin_token()
        yield srv
    finally:
        srv.stop()
        if os.environ.get("ZENMLFS_KEEP_SERVER_DIR"):
            print("server dir kept:", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def _session_server():
    with running_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def zenml_server(request):
    """The real ZenML server (see tests/zenserver.py): one per session,
    or, for a module that sets ZENML_SERVER_CLASS (a ZenServer subclass),
    one of that class for the module alone (`mount`, `proxy`,
    `service_account` then use it too).  Log: zenml_server.log_path.
    Restarted at the end of any test that stopped it (see the autouse
    fixture below)."""
    cls = getattr(request.module, "ZENML_SERVER_CLASS", None)
    if cls is None:
        yield request.getfixturevalue("_session_server")
        return
    prefix = "zenmlfs-%s-" % request.module.__name__.rpartition(".")[2]
    with running_server(cls, prefix) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _server_back_up(request):
    """A test that stops the server gets it restarted, pass or fail."""
    yield
    if "zenml_server" in request.fixturenames:
        srv = request.getfixturevalue("zenml_server")
        if not srv.running():
            srv.start()


@pytest.fixture
def service_account(zenml_server):
    """A fresh service account with one API key ("default"); deleted after
    the test (errors ignored)."""
    sa = ServiceAccount(zenml_server)
    yield sa
    if not zenml_server.running():
        zenml_server.start()
    sa.delete()


@pytest.fixture
def mount(zenml_server):
    """Factory: mount(key, opts="", url=None, env_extra=None, extra_args=(),
    key_via="file", timeout=30) -> Mount.

    Runs `zenmlfs -f --log LOG --url URL [--api-key-file F] [-o OPTS]
    [extra_args] MNT` and returns once MNT is a mount point.  The key goes
    only through a 0600 --api-key-file (key_via="file") or the
    ZENML_STORE_API_KEY variable (key_via="env"); key=None passes none.
    Request `proxy` (and service_account) before `mount` in a test's
    arguments, so they outlive the mount.  At teardown every mount is
    unmounted (fusermount3 -u, then -uz), the daemon must exit with
    m.expect_exit (0) and, unless m.expect_errors, have logged no
    ': error:' line."""
    made = []

    def factory(key, opts="", url=None, env_extra=None, extra_args=(),
                key_via="file", timeout=MOUNT_TIMEOUT):
        if not os.access(ZENMLFS_BIN, os.X_OK):
            pytest.fail("no zenmlfs binary at %s (build it, or set "
                        "ZENMLFS_BIN)" % ZENMLFS_BIN)
        m = start_mount(_tmpdir("m"), url or zenml_server.url, key, opts,
                        env_extra, extra_args, key_via, timeout)
        made.append(m)
        return m

    try:
        yield factory
    finally:
        finish_mounts(made)


@pytest.fixture
def admin_mount(mount):
    """Factory: admin_mount(opts="meta_ttl=1", url=None) -> Mount, logged
    in as the server's admin (password login, no key): service-accounts/
    and the like are the admin's."""
    def factory(opts="meta_ttl=1", url=None):
        return mount(None, opts, url=url, env_extra=dict(ADMIN_ENV))
    return factory


class Cleanup:
    """Service accounts (and tags) to delete at the end, by REST."""

    def __init__(self, srv):
        self.srv = srv
        self.names = []
        self.tags = []

    def sa(self, name):
        self.names.append(name)
        return name

    def run(self):
        for t in self.tags:
            self.srv.api("DELETE", "/api/v1/tags/" + t, timeout=10)
        for n in self.names:
            r = self.srv.api("GET", SAS + "/" + n, timeout=10)
            if r.status_code == 404:
                continue
            assert r.status_code == 200, r.text
            self.srv.api("DELETE", SAS + "/" + r.json()["id"], timeout=10)


@pytest.fixture
def cleanup(zenml_server):
    """Cleanup: c.sa(name) returns name and deletes that service account
    after the test, c.tags the tags; with the server restarted first if
    the test stopped it."""
    c = Cleanup(zenml_server)
    yield c
    if not zenml_server.running():
        zenml_server.start()
    c.run()


@pytest.fixture
def proxy(zenml_server):
    """FaultProxy (tests/proxy.py) in front of zenml_server; give
    proxy.url to mount(url=...)."""
    p = FaultProxy("127.0.0.1", zenml_server.port).start()
    try:
        yield p
    finally:
        p.stop()
