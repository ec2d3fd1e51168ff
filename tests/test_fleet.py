"""A fleet that restarts together comes back (issue 20): startup retries
a server that is down or overloaded, a restart reuses the session kept
from the last start, every retry backs off, and the metrics file shows it.
"""

import base64
import errno
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import time

import pytest

from conftest import (ZENMLFS_BIN, _base_env, _fusermount_u, _tmpdir,
                      is_mounted, jwt_claims, read_file)
from zenserver import ServiceAccount

FAST = "start_delay=0"


class Daemon:
    """zenmlfs -f started by the test itself, so that the test chooses
    its state directory and sees its terminal output while it starts."""

    def __init__(self, url, key, state_dir, opts="", notify=False):
        self.dir = _tmpdir("fleet")
        self.notes = []
        self.sock = None
        self.mnt = os.path.join(self.dir, "mnt")
        os.mkdir(self.mnt)
        self.log_path = os.path.join(self.dir, "zenmlfs.log")
        self.stdio = os.path.join(self.dir, "stdio.log")
        kf = os.path.join(self.dir, "api-key")
        fd = os.open(kf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        home = os.path.join(self.dir, "home")
        os.mkdir(home, 0o700)
        o = ",".join(x for x in (FAST, "state_dir=" + state_dir, opts) if x)
        cmd = [ZENMLFS_BIN, "-f", "--log", self.log_path, "--url", url,
               "--api-key-file", kf, "-o", o, self.mnt]
        env = _base_env(home)
        if notify:
            # what the daemon tells systemd (sd_notify), as the unit sees it
            env["NOTIFY_SOCKET"] = os.path.join(self.dir, "notify")
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(env["NOTIFY_SOCKET"])
            self.sock.setblocking(False)
        with open(self.stdio, "wb") as out:
            self.proc = subprocess.Popen(cmd, env=env,
                                         stdin=subprocess.DEVNULL,
                                         stdout=out,
                                         stderr=subprocess.STDOUT)

    def output(self):
        with open(self.stdio, errors="replace") as f:
            return f.read()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait(self, cond, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            if self.proc.poll() is not None:
                pytest.fail("zenmlfs exited with %s while waiting for %s\n"
                            "%s\n%s" % (self.proc.returncode, what,
                                        self.output(), self.log()))
            time.sleep(0.05)
        pytest.fail("no %s after %s s\n%s\n%s" % (what, timeout,
                                                 self.output(), self.log()))

    def notified(self):
        """Every sd_notify message so far, one string each."""
        while self.sock:
            try:
                self.notes.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        return self.notes

    def wait_mounted(self, timeout=60):
        self.wait(lambda: is_mounted(self.mnt), timeout, "mount")

    def read(self, name):
        return read_file(os.path.join(self.mnt, name))

    def stop(self):
        """Unmount; the daemon's exit code."""
        if self.sock:
            self.sock.close()
            self.sock = None
        if is_mounted(self.mnt):
            _fusermount_u(self.mnt)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


@pytest.fixture
def daemons():
    made = []
    yield lambda *a, **kw: made.append(Daemon(*a, **kw)) or made[-1]
    for d in made:
        d.stop()
        shutil.rmtree(d.dir, ignore_errors=True)


@pytest.fixture
def state_dir():
    d = _tmpdir("state")
    os.chmod(d, 0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def kept_file(state_dir, url, key):
    """Where the session an API key's login gave is kept (its name is a
    keyed BLAKE2b of the URL and the key: backend/session.c)."""
    h = hashlib.blake2b(url.encode() + b"\0" + key.encode(), digest_size=16,
                        key=b"zenmlfs key file")
    return os.path.join(state_dir, "keysessions", h.hexdigest())


def logins(proxy):
    return proxy.count("/api/v1/login", method="POST")


def test_startup_waits_for_a_server_that_is_down(zenml_server,
                                                 service_account, proxy,
                                                 state_dir, daemons):
    proxy.set_mode("refuse")
    d = daemons(proxy.url, service_account.key, state_dir, notify=True)
    # It says on its terminal that it tries again, and does not exit.
    d.wait(lambda: d.output().count("trying again") >= 2, 30,
           "second retry")
    assert not is_mounted(d.mnt)
    # systemd is told why it waits, and is not told it is ready
    d.wait(lambda: any(n.startswith("STATUS=state: starting (login to '%s' "
                                    "failed: " % proxy.url)
                       for n in d.notified()), 30, "STATUS=starting")
    assert not any("READY=1" in n.split("\n") for n in d.notified())
    # zenmlfs status: nothing mounted there (3)
    r = subprocess.run([ZENMLFS_BIN, "status", d.mnt], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 3, r
    proxy.set_mode("pass")
    # READY=1 once the token is readable through the mount
    d.wait(lambda: any("READY=1" in n.split("\n") for n in d.notified()),
           90, "READY=1")
    assert jwt_claims(d.read("token").decode())["sub"]
    assert d.stop() == 0


def test_startup_retries_5xx_and_exits_on_401(zenml_server, service_account,
                                              proxy, state_dir, daemons):
    proxy.add_fault("/api/v1/login", "status", status=503, count=2)
    d = daemons(proxy.url, service_account.key, state_dir)
    d.wait_mounted()
    assert logins(proxy) == 3
    assert d.stop() == 0
    # A key the server refuses is a local mistake: exit 4 at once.
    proxy.reset_counts()
    bad = daemons(proxy.url, "ZENKEY_" + base64.b64encode(json.dumps(
        {"id": service_account.key_id, "key": "00" * 32}).encode()).decode(),
        _tmpdir("state2"))
    assert bad.proc.wait(60) == 4
    assert logins(proxy) == 1


def test_startup_honours_retry_after(zenml_server, service_account, proxy,
                                     state_dir, daemons):
    proxy.add_fault("/api/v1/login", "status", status=429, count=1,
                    headers={"Retry-After": "3"})
    t0 = time.monotonic()
    d = daemons(proxy.url, service_account.key, state_dir)
    d.wait_mounted()
    assert time.monotonic() - t0 >= 3.0
    assert logins(proxy) == 2
    assert "trying again in 3." in d.output()


def test_restart_reuses_the_kept_session(zenml_server, service_account,
                                         proxy, state_dir, daemons):
    sa = service_account
    d = daemons(proxy.url, sa.key, state_dir)
    d.wait_mounted()
    tok1 = d.read("token")
    assert logins(proxy) == 1
    assert d.stop() == 0

    path = kept_file(state_dir, proxy.url, sa.key)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    with open(path, "rb") as f:
        blob = f.read()
    # Encrypted: no JWT (they all start "eyJ"), no part of the key.
    assert b"eyJ" not in blob
    assert sa.key.encode()[7:40] not in blob

    proxy.reset_counts()
    d2 = daemons(proxy.url, sa.key, state_dir)
    d2.wait_mounted()
    tok2 = d2.read("token")
    assert logins(proxy) == 0
    assert proxy.count("/api/v1/api_token") >= 1
    assert jwt_claims(tok2.decode())["sub"] == jwt_claims(tok1.decode())["sub"]
    assert "using the session kept" in d2.log()
    assert d2.stop() == 0


def test_kept_session_is_useless_with_another_key(zenml_server,
                                                  service_account, proxy,
                                                  state_dir, daemons):
    a = service_account
    b = ServiceAccount(zenml_server)
    try:
        d = daemons(proxy.url, a.key, state_dir)
        d.wait_mounted()
        assert d.stop() == 0
        # A's file where B's would be: B cannot open it, and logs in.
        os.makedirs(os.path.dirname(kept_file(state_dir, proxy.url, b.key)),
                    exist_ok=True)
        shutil.copy(kept_file(state_dir, proxy.url, a.key),
                    kept_file(state_dir, proxy.url, b.key))
        proxy.reset_counts()
        d2 = daemons(proxy.url, b.key, state_dir)
        d2.wait_mounted()
        assert logins(proxy) == 1
        tok = d2.read("token").decode()
        user = zenml_server.api("GET", "/api/v1/current-user",
                                token=tok).json()
        assert user["id"] == b.id
        assert d2.stop() == 0
    finally:
        b.delete()


def test_restart_with_a_deactivated_key(zenml_server, service_account,
                                        proxy, state_dir, daemons):
    sa = service_account
    d = daemons(proxy.url, sa.key, state_dir)
    d.wait_mounted()
    assert d.stop() == 0
    path = kept_file(state_dir, proxy.url, sa.key)
    assert os.path.exists(path)
    zenml_server.set_api_key_active(sa.id, sa.key_id, False)
    proxy.reset_counts()
    d2 = daemons(proxy.url, sa.key, state_dir)
    # The kept session is refused, the login with the key too: exit 4,
    # and the kept session is gone.
    assert d2.proc.wait(60) == 4
    assert logins(proxy) == 1
    assert not os.path.exists(path)
    assert not is_mounted(d2.mnt)


def _short_token(tok, life):
    """The token with its exp moved to now + life (the daemon does not
    check the signature; the server never sees this one)."""
    h, p, s = tok.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["exp"] = int(time.time()) + life
    p = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()
    return "%s.%s.%s" % (h, p.rstrip("="), s)


def metrics(d):
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(d.read("metrics").decode()):
        for s in fam.samples:
            key = s.name + "".join("{%s=%s}" % kv
                                   for kv in sorted(s.labels.items()))
            out[key] = s.value
    return out


def test_expired_probe_backs_off(zenml_server, service_account, proxy,
                                 state_dir, daemons):
    proxy.rewrite_token = lambda t: _short_token(t, 47)
    d = daemons(proxy.url, service_account.key, state_dir,
                "token_lifetime=600")
    d.wait_mounted()
    # Down (503 to everything): the token expires, the daemon probes.
    proxy.set_mode("status", status=503)
    d.wait(lambda: "state: expired" in d.read("status").decode(), 60,
           "expired state")
    proxy.reset_counts()
    t0 = time.monotonic()
    d.wait(lambda: time.monotonic() - t0 > 40, 50, "observation window")
    probes = proxy.count("/health")
    # A fixed 2 s period would send 20; the backoff (2 s doubling to 20 s,
    # full jitter) about 7.
    assert 1 <= probes <= 13, probes
    m = metrics(d)
    assert m['zenmlfs_requests_total{kind=probe}'] >= probes
    assert m["zenmlfs_state{state=expired}"] == 1
    # Back: the daemon serves again within one probe interval.
    proxy.rewrite_token = None
    proxy.set_mode("pass")
    d.wait(lambda: "state: ok" in d.read("status").decode(), 30, "recovery")
    assert d.stop() == 0


def test_metrics_file(zenml_server, service_account, proxy, state_dir,
                      daemons):
    d = daemons(proxy.url, service_account.key, state_dir)
    d.wait_mounted()
    st = os.stat(os.path.join(d.mnt, "metrics"))
    assert stat.S_IMODE(st.st_mode) == 0o444
    m = metrics(d)
    assert m["zenmlfs_refreshes_total"] == 1
    assert m["zenmlfs_logins_total"] == 1
    assert m["zenmlfs_requests_total{kind=token}"] == 1
    assert m["zenmlfs_state{state=ok}"] == 1
    assert m["zenmlfs_token_expiry_timestamp_seconds"] > time.time()
    assert m["zenmlfs_last_refresh_success_timestamp_seconds"] <= time.time()
    with open(os.path.join(d.mnt, "refresh"), "w") as f:
        f.write("1")
    m2 = metrics(d)
    assert m2["zenmlfs_refreshes_total"] == 2
    assert m2["zenmlfs_requests_total{kind=token}"] == 2
    # A failed refresh counts by cause.
    proxy.add_fault("/api/v1/api_token", "status", status=503, count=1)
    with pytest.raises(OSError):
        with open(os.path.join(d.mnt, "refresh"), "w") as f:
            f.write("1")
    m3 = metrics(d)
    assert m3["zenmlfs_refresh_failures_total{cause=server}"] == 1
    assert m3["zenmlfs_retries_total"] == 1
    assert d.stop() == 0
