"""The ZenML Pro management API mount (zenmlfs --pro-api URL).

No ZenML Pro server can run here: these tests mount a stand-in
(tests/prostandin.py) that serves exactly the documented routes and
replies (POST /auth/login with form password=<PAT>, GET /users/me, a 401
for a bad or revoked PAT).  They are verified against the documented
contract, not against the ZenML Pro service.  What the stand-in need not
fake (the refresh plan, validation, backoff, torn reads, status) is the
same code as a workspace mount's, tested against the real ZenML server in
the other files.  A workspace mounted with a PAT or a ZENPROKEY_ key is the
API-key path of those tests.
"""

import errno
import json
import os
import secrets
import shutil
import subprocess
import threading
import time

import pytest

from conftest import (ZENMLFS_BIN, _base_env, _tmpdir, finish_mounts,
                      is_mounted, jwt_claims, os_error, read_file,
                      run_zenmlfs, start_mount)
from prostandin import USER_ID, ProStandIn

PAT = "zenpat_" + secrets.token_hex(16)
ORG_KEY = "ZENPROKEY_" + secrets.token_hex(24)


@pytest.fixture
def standin():
    s = ProStandIn(keys=[PAT, ORG_KEY]).start()
    try:
        yield s
    finally:
        s.stop()


def _start(url, key, opts="", key_via="file", pro_via="flag"):
    """`zenmlfs -f --log LOG --pro-api URL [-o OPTS] MNT` (or -o pro_api=),
    the key in a 0600 file or ZENML_STORE_API_KEY; returns once mounted."""
    pro = ["--pro-api", url] if pro_via == "flag" else ["-o",
                                                         "pro_api=" + url]
    return start_mount(_tmpdir("pro"), None, key, opts, extra_args=pro,
                       key_via=key_via)


@pytest.fixture
def pro_mount():
    made = []

    def factory(*a, **kw):
        m = _start(*a, **kw)
        made.append(m)
        return m

    try:
        yield factory
    finally:
        finish_mounts(made)


def _read_token(m, timeout=10):
    """The token, once the daemon has published it (the mount is up before
    the readiness read is answered)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return m.text("token")
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("key,key_via", [(PAT, "env"), (ORG_KEY, "file")],
                         ids=["pat-env", "org-key-file"])
def test_pro_mount_serves_the_exchanged_token(standin, pro_mount, key,
                                              key_via):
    m = pro_mount(standin.url, key, key_via=key_via)
    tok = _read_token(m)
    # One exchange at startup; its access token is the token.
    assert standin.count("/auth/login") == 1
    assert tok == standin.tokens[-1]
    # The documented form: password=<key>, nothing else.
    assert standin.logins == [{"password": key}]
    claims = jwt_claims(tok)
    assert claims["sub"] == USER_ID
    tj = json.loads(m.text("token.json"))
    assert tj["access_token"] == tok
    assert tj["token_type"].lower() == "bearer"
    assert tj["expires_at"].endswith("Z")
    assert 3500 <= tj["expires_in"] <= 3600
    # whoami/ from /users/me; no admin trees, no server/.
    assert sorted(os.listdir(m.path)) == ["metrics", "refresh", "status",
                                         "token", "token.json", "whoami"]
    assert sorted(os.listdir(m.join("whoami"))) == ["email", "id",
                                                    "info.json", "name"]
    assert m.text("whoami/id") == USER_ID + "\n"
    assert m.text("whoami/name") == "ada\n"
    assert m.text("whoami/email") == "ada@example.com\n"
    assert json.loads(m.text("whoami/info.json")) == {
        "id": USER_ID, "name": "ada", "email": "ada@example.com"}
    for absent in ("server", "server/version", "devices",
                   "service-accounts", "service-accounts/ci",
                   "whoami/is_service_account", "whoami/active"):
        assert os_error(lambda: os.stat(m.join(absent))) == errno.ENOENT, \
            absent
    assert os_error(lambda: os.mkdir(m.join("service-accounts/x"))) == \
        errno.ENOENT
    st = m.status()
    assert st["state"] == "ok"
    assert st["server"] == standin.url
    assert st["auth"] == "api-key"
    # Nothing the stand-in does not serve was asked for.
    assert set(standin._counts) <= {"/auth/login", "/users/me"}


def test_pro_api_mount_option(standin, pro_mount):
    """-o pro_api=URL (for fstab) is --pro-api URL."""
    m = pro_mount(standin.url, PAT, pro_via="option")
    assert _read_token(m) == standin.tokens[-1]
    assert m.status()["server"] == standin.url


def test_pro_refresh_is_a_new_exchange(standin, pro_mount):
    m = pro_mount(standin.url, PAT)
    first = _read_token(m)
    m.write("refresh", "1")
    # The write returns once the new token is what a read gets.
    assert standin.count("/auth/login") == 2
    second = m.text("token")
    assert second == standin.tokens[-1] != first
    assert m.status()["refreshes"] == "2"


def test_pro_restart_reuses_the_kept_token(standin, pro_mount):
    """The exchanged token is kept (encrypted under the key, 0600) in the
    state directory: a restart serves it without another exchange while it
    is valid; a key that is revoked meanwhile ends the kept token."""
    state = _tmpdir("prostate")
    opts = "state_dir=" + state
    m = pro_mount(standin.url, PAT, opts)
    first = m.text("token").strip()
    n = standin.count("/auth/login")
    assert m.umount() == 0
    kept = os.listdir(os.path.join(state, "keysessions"))
    assert len(kept) == 1
    path = os.path.join(state, "keysessions", kept[0])
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path, "rb") as f:
        assert first.encode() not in f.read()
    m = pro_mount(standin.url, PAT, opts)
    assert m.text("token").strip() == first
    assert standin.count("/auth/login") == n
    assert m.umount() == 0
    shutil.rmtree(state, ignore_errors=True)


def test_pro_refreshes_ahead_of_expiry(standin, pro_mount):
    """Tokens of 60 s (the shortest the daemon serves from is 45 s of life
    left): the engine exchanges the key again well before expiry."""
    standin.expires_in = 60
    m = pro_mount(standin.url, PAT)
    first = _read_token(m)
    assert standin.wait_count("/auth/login", 2, timeout=60)
    # The new token is served before the old one's last 30 s.
    deadline = time.monotonic() + 10
    while m.text("token") == first and time.monotonic() < deadline:
        time.sleep(0.1)
    tok = m.text("token")
    assert tok == standin.tokens[-1] != first
    assert jwt_claims(first)["exp"] - time.time() > 30 - 1
    # Its lifetime is the server's: nothing "asked" about it.
    assert m.status()["token_lifetime"] in ("59", "60")
    assert "token_lifetime" not in m.log()


def test_pro_token_reads_are_whole_during_refreshes(standin, pro_mount):
    """Readers during refreshes get one whole token each, every one a
    token the stand-in issued (the torn-read contract, same code as a
    workspace's)."""
    m = pro_mount(standin.url, PAT)
    _read_token(m)
    seen, stop, bad = set(), threading.Event(), []

    def reader():
        while not stop.is_set():
            t = read_file(m.join("token")).decode()
            if t not in standin.tokens:
                bad.append(t)
            seen.add(t)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(5):
            m.write("refresh", "1")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not bad
    assert len(seen) >= 2


def test_pro_revoked_key(standin, pro_mount):
    """A 401 on the exchange: EKEYREVOKED for the refresh and the reads."""
    m = pro_mount(standin.url, PAT)
    _read_token(m)
    m.expect_errors = True
    standin.revoke(PAT)
    assert os_error(lambda: m.write("refresh", "1")) == errno.EKEYREVOKED
    # The daemon drops the token from the kernel's cache on its own
    # notifier: wait for that.
    deadline = time.monotonic() + 20
    while os_error(lambda: m.read("token")) is None:
        assert time.monotonic() < deadline, "revoked token still served"
        time.sleep(0.05)
    assert os_error(lambda: m.read("token")) == errno.EKEYREVOKED
    st = m.status()
    assert st["state"] == "unauthenticated"
    assert "401" in st["last_error"]
    r = subprocess.run([ZENMLFS_BIN, "status", m.path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=30)
    assert r.returncode == 2, r
    assert "state: unauthenticated" in r.stdout
    assert PAT not in m.log()


def test_pro_server_errors_keep_the_token(standin, pro_mount):
    """A 5xx on the exchange: the refresh fails with EIO, the current token
    is still served (degraded); once the server answers, all is well."""
    m = pro_mount(standin.url, PAT)
    tok = _read_token(m)
    m.expect_errors = True
    standin.fail = 503
    assert os_error(lambda: m.write("refresh", "1")) == errno.EIO
    assert m.text("token") == tok
    st = m.status()
    assert st["state"] == "degraded"
    assert "503" in st["last_error"]
    r = subprocess.run([ZENMLFS_BIN, "status", m.path],
                       stdout=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 1
    standin.fail = 0
    m.write("refresh", "1")
    assert m.text("token") == standin.tokens[-1] != tok
    assert m.status()["state"] == "ok"
    r = subprocess.run([ZENMLFS_BIN, "status", m.path],
                       stdout=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 0 and "state: ok" in r.stdout


def test_pro_startup_failures(standin, tmp_path):
    """Exit codes on the terminal, nothing mounted: a refused key 4, no key
    2, a bad URL 3, tokens too short to serve 3, two URLs 1; an unreachable
    server is tried again.
    """
    mnt = str(tmp_path)
    r = run_zenmlfs(["--pro-api", standin.url, mnt],
                    env={"ZENML_STORE_API_KEY": "zenpat_wrong"})
    assert r.returncode == 4, r.stderr
    assert "401" in r.stderr and "zenpat_wrong" not in r.stderr
    r = run_zenmlfs(["--pro-api", standin.url, mnt])
    assert r.returncode == 2, r.stderr
    r = run_zenmlfs(["--pro-api", "https://u:pw@cloudapi.example", mnt],
                    env={"ZENML_STORE_API_KEY": PAT})
    assert r.returncode == 3 and "pw" not in r.stderr, r.stderr
    # A server that does not answer is tried again (issue 20), not an
    # exit: the terminal says so, nothing is mounted meanwhile.
    closed = ProStandIn(keys=[]).start()
    url = closed.url
    closed.stop()
    p = subprocess.Popen([ZENMLFS_BIN, "-f", "--pro-api", url, "-o",
                          "start_delay=0", mnt],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True,
                         env=dict(_base_env(_tmpdir("home")),
                                  ZENML_STORE_API_KEY=PAT))
    try:
        line = p.stderr.readline()
        assert p.poll() is None, line
        assert line.startswith("zenmlfs: login to '%s' failed: " % url), line
        assert "trying again in" in line and PAT not in line, line
        assert not is_mounted(mnt)
    finally:
        p.terminate()
        p.wait(10)
        p.stderr.close()
    standin.expires_in = 30
    r = run_zenmlfs(["--pro-api", standin.url, mnt],
                    env={"ZENML_STORE_API_KEY": PAT})
    assert r.returncode == 3, r.stderr
    assert "too short" in r.stderr or "expires in" in r.stderr
    r = run_zenmlfs(["--pro-api", standin.url, "--url", "http://x.example",
                     mnt], env={"ZENML_STORE_API_KEY": PAT})
    assert r.returncode == 1, r.stderr
    assert not is_mounted(mnt)
