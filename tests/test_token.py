"""Issue "Foundation": token, token.json, refresh, status, server/, whoami/,
refused mounts and the basic security of the mount.

Every test reads or writes the mount as a user would (open/read/write) and
checks the effect against the real ZenML server with its own HTTP calls.
"""

import base64
import calendar
import errno
import itertools
import json
import os
import queue
import re
import subprocess
import threading
import time

import pytest

from conftest import (TOKENS_BOUND, attr, is_mounted, os_error, read_file,
                      run_zenmlfs)
from zenserver import fake_api_key, free_port, jwt_claims, jwt_header, jwt_sign

JWT_RE = re.compile(rb"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
RFC3339_Z = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$")
STATUS_KEYS = ("state", "server", "auth", "token_expires_at",
               "next_refresh_at", "last_refresh_at", "last_error",
               "refreshes", "refresh_failures")
EXPIRY_MARGIN = 30      # never served within 30 s of exp (docs/design.md)
CLOCK_SLACK = 1.0       # exp is whole seconds
DENIED = (errno.EACCES, errno.EPERM, errno.EBADF)


# ------------------------------------------------------------------ helpers


def assert_jwt(tok):
    """A well-formed HS256 JWT with the claims the server puts in."""
    if isinstance(tok, str):
        tok = tok.encode()
    assert JWT_RE.match(tok), "not a JWT: %r" % tok[:80]
    s = tok.decode()
    assert jwt_header(s)["alg"] == "HS256"
    claims = jwt_claims(s)
    for k in ("sub", "iss", "aud", "exp"):
        assert k in claims, "claim %r missing in %r" % (k, claims)
    return claims


def assert_authenticates(server, tok, sa):
    """tok is accepted by the server and identifies sa."""
    if isinstance(tok, bytes):
        tok = tok.decode()
    r = server.current_user(tok)
    assert r.status_code == 200, "token rejected: %s %s" % (r.status_code,
                                                            r.text)
    me = r.json()
    assert me["id"] == sa.id and me["name"] == sa.name
    return me


def rfc3339_to_epoch(s):
    mt = RFC3339_Z.match(s)
    assert mt, "not RFC 3339 UTC with Z: %r" % s
    return calendar.timegm(time.strptime(mt.group(1), "%Y-%m-%dT%H:%M:%S"))


def as_bool_text(v):
    return "1" if v in (True, 1) else "0" if v in (False, 0) else repr(v)


def classify_torn(bad, known):
    """Describe how a read that is no whole token relates to the tokens
    handed out (for the failure message)."""
    if not bad:
        return "empty read"
    stripped = bad.rstrip(b"\0")
    if stripped != bad and stripped in known:
        return "token of len %d + %d NUL bytes" % (len(stripped),
                                                   len(bad) - len(stripped))
    for k in known:
        if k.startswith(bad):
            return "cut: first %d of a %d-byte token" % (len(bad), len(k))
    for k in known:
        if bad.startswith(k):
            return "token of len %d + %r" % (len(k), bad[len(k):][:20])
    # Longest common prefix with any known token.
    best = max(known, key=lambda k: len(os.path.commonprefix([k, bad])))
    n = len(os.path.commonprefix([best, bad]))
    return "mixed: len %d, first %d bytes of a %d-byte token, then %r" % (
        len(bad), n, len(best), bad[n:n + 16])


class Readers:
    """N threads looping open/read/close on a file, recording every
    distinct content with the wall-clock window it was read in, and every
    error.  New contents are queued in .new for the test to check."""

    def __init__(self, path, n=4):
        self.path = path
        self.lock = threading.Lock()
        self.seen = {}          # bytes -> [first_before, last_after, count]
        self.errors = []        # (time, errno)
        self.reads = 0
        self.new = queue.Queue()
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True)
                        for _ in range(n)]

    def _run(self):
        path = self.path
        while not self._stop.is_set():
            t0 = time.time()
            try:
                data = read_file(path)
            except OSError as e:
                with self.lock:
                    self.errors.append((t0, e.errno))
                time.sleep(0.01)
                continue
            t1 = time.time()
            with self.lock:
                self.reads += 1
                rec = self.seen.get(data)
                if rec is None:
                    self.seen[data] = [t0, t1, 1]
                    self.new.put(data)
                else:
                    rec[1] = t1
                    rec[2] += 1

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self.threads:
            t.join(10)


# ----------------------------------------------------------- token basics


def test_token_authenticates_as_service_account(zenml_server,
                                                service_account, mount):
    m = mount(service_account.key, "token_lifetime=600")
    raw = m.read("token")
    assert not raw.endswith(b"\n"), "token must have no trailing newline"
    claims = assert_jwt(raw)
    assert claims["sub"] == service_account.id
    if TOKENS_BOUND:
        assert claims.get("api_key_id") == service_account.key_id
    left = claims["exp"] - time.time()
    assert 600 - 10 <= left <= 600 + CLOCK_SLACK, left
    me = assert_authenticates(zenml_server, raw, service_account)
    assert me["body"]["is_service_account"] is True
    # Not minted per read: the same token again.
    assert m.read("token") == raw
    # stat size is the exact token length (cat relies on it).
    assert os.stat(m.join("token")).st_size == len(raw)


def test_token_json(zenml_server, service_account, mount):
    m = mount(service_account.key, "token_lifetime=600")
    tok = m.text("token")
    s = m.text("token.json")
    assert s.endswith("\n")
    doc = json.loads(s)
    assert set(doc) == {"access_token", "token_type", "expires_at",
                        "expires_in"}
    assert doc["access_token"] == tok
    assert doc["token_type"] == "bearer"
    exp = jwt_claims(tok)["exp"]
    assert rfc3339_to_epoch(doc["expires_at"]) == int(exp)
    assert isinstance(doc["expires_in"], int) and \
        not isinstance(doc["expires_in"], bool)
    assert 0 < doc["expires_in"] <= 600
    assert abs(doc["expires_in"] - (exp - time.time())) <= 3
    assert service_account.key not in s


def test_server_files(zenml_server, service_account, mount):
    m = mount(service_account.key, "token_lifetime=600")
    info = zenml_server.api("GET", "/api/v1/info", token="").json()
    names = ("url", "id", "name", "version", "auth_scheme",
             "deployment_type")
    assert sorted(os.listdir(m.join("server"))) == \
        sorted(names + ("info.json",))
    got = {n: attr(m, "server/" + n) for n in names}
    assert got["url"].rstrip("/") == zenml_server.url.rstrip("/")
    for n in ("id", "name", "version", "auth_scheme", "deployment_type"):
        assert got[n] == str(info[n]), n
    doc = json.loads(m.text("server/info.json"))
    for n in names:
        assert str(doc[n]) == got[n], n


def test_whoami_files(zenml_server, service_account, mount):
    m = mount(service_account.key, "token_lifetime=600")
    tok = m.text("token")
    me = zenml_server.current_user(tok).json()
    assert attr(m, "whoami/id") == me["id"] == \
        service_account.id
    assert attr(m, "whoami/name") == me["name"] == \
        service_account.name
    assert attr(m, "whoami/is_service_account") == "1"
    assert attr(m, "whoami/active") == "1"
    doc = json.loads(m.text("whoami/info.json"))
    assert doc["id"] == service_account.id
    assert doc["name"] == service_account.name
    assert as_bool_text(doc["is_service_account"]) == "1"
    assert as_bool_text(doc["active"]) == "1"
    assert service_account.key not in m.text("whoami/info.json")
    # A workspace's fields only (the Pro management API's email is not).
    assert sorted(os.listdir(m.join("whoami"))) == [
        "active", "id", "info.json", "is_service_account", "name"]
    assert sorted(doc) == ["active", "id", "is_service_account", "name"]
    assert os_error(lambda: os.stat(m.join("whoami/email"))) == errno.ENOENT
    assert sorted(os.listdir(m.path)) == [
        "devices", "metrics", "refresh", "server", "service-accounts",
        "status", "token", "token.json", "whoami"]


def test_status_healthy(zenml_server, service_account, mount):
    m = mount(service_account.key, "token_lifetime=600")
    tok = m.text("token")
    text = m.text("status")
    assert text.endswith("\n")
    st = m.status()
    for k in STATUS_KEYS:
        assert k in st, "status lacks %r:\n%s" % (k, text)
    assert st["state"] == "ok"
    assert st["auth"] == "api-key"
    assert zenml_server.url.rstrip("/") in st["server"]
    assert rfc3339_to_epoch(st["token_expires_at"]) == \
        int(jwt_claims(tok)["exp"])
    assert rfc3339_to_epoch(st["next_refresh_at"]) < jwt_claims(tok)["exp"]
    assert int(st["refresh_failures"]) == 0
    assert service_account.key not in text and tok not in text


# ---------------------------------------------------------------- refresh


def test_refresh_mints_new_token(zenml_server, service_account, mount):
    m = mount(service_account.key, "token_lifetime=600")
    old = m.text("token")
    # Servers whose tokens have no "iat" (before 0.8x) mint the very same
    # token twice in one second: give them a new second.
    same_second = "iat" not in jwt_claims(old)
    n0 = int(m.status()["refreshes"])
    if same_second:
        time.sleep(1.1)
    assert m.write("refresh", "1\n") == 2
    new = m.text("token")
    assert new != old
    assert_jwt(new)
    assert_authenticates(zenml_server, new, service_account)
    assert int(m.status()["refreshes"]) >= n0 + 1
    # As the shell does it.
    if same_second:
        time.sleep(1.1)
    subprocess.run(["sh", "-c", 'echo 1 > "$1"', "sh", m.join("refresh")],
                   check=True, timeout=30)
    newer = m.text("token")
    assert newer not in (old, new)
    assert_authenticates(zenml_server, newer, service_account)
    assert json.loads(m.text("token.json"))["access_token"] == newer


@pytest.mark.parametrize("data", ["banana\n", "banana", "2\n", "1 1\n"])
def test_refresh_rejects_bad_input(zenml_server, service_account, proxy,
                                   mount, data):
    m = mount(service_account.key, "token_lifetime=600", url=proxy.url)
    old = m.text("token")
    n0 = int(m.status()["refreshes"])
    sent = proxy.count("/api/v1/api_token")
    assert os_error(lambda: m.write("refresh", data)) == errno.EINVAL
    assert m.text("token") == old
    assert int(m.status()["refreshes"]) == n0
    # Invalid input sends nothing to the server.
    assert proxy.count("/api/v1/api_token") == sent


def test_background_refresh_before_expiry(zenml_server, service_account,
                                          mount):
    """token_lifetime=60: 4 readers for 45 s only ever see whole,
    server-valid tokens, never one within 30 s of its exp, and the token
    is replaced in the background at least once."""
    sa = service_account
    m = mount(sa.key, "token_lifetime=60")
    checked = set()
    with Readers(m.join("token")) as rd:
        deadline = time.time() + 45
        while time.time() < deadline:
            try:
                tok = rd.new.get(timeout=0.2)
            except queue.Empty:
                continue
            # Checked at once: it was read with >= 30 s left, so it is
            # still valid now.
            assert_jwt(tok)
            assert_authenticates(zenml_server, tok, sa)
            checked.add(tok)
    with rd.lock:
        seen = dict(rd.seen)
        errors = list(rd.errors)
        reads = rd.reads
    while not rd.new.empty():
        tok = rd.new.get()
        assert_jwt(tok)
        checked.add(tok)
    assert not errors, "reads failed: %r" % errors[:10]
    assert reads > 1000
    assert set(seen) == checked
    for tok, (first, last, n) in seen.items():
        exp = jwt_claims(tok.decode())["exp"]
        assert exp - last >= EXPIRY_MARGIN - CLOCK_SLACK, (
            "token served %.1f s before its exp (read %d times)"
            % (exp - last, n))
    assert len(seen) >= 2, "no background refresh in 45 s"


def test_length_change_never_tears(zenml_server, service_account, proxy,
                                   mount):
    """Tokens whose length changes on every refresh, refreshed as fast as
    `echo 1 > refresh` goes: 4 readers only ever see one whole token that
    the proxy handed out, never a cut, mixed or zero-padded one."""
    secret = zenml_server.jwt_secret
    counter = itertools.count(1)

    def rewrite(real):
        # A genuine, server-valid token (signed with the server's secret)
        # with a padding claim whose length differs from the previous one.
        claims = jwt_claims(real)
        claims["pad"] = "p" * ((next(counter) * 53) % 241)
        return jwt_sign(claims, secret)

    proxy.rewrite_token = rewrite
    m = mount(service_account.key, "token_lifetime=600", url=proxy.url)
    writes = 0
    stale = []
    with Readers(m.join("token")) as rd:
        deadline = time.time() + 20
        while time.time() < deadline:
            m.write("refresh", "1\n")
            writes += 1
            # A write through the tree shows at once.
            got = m.read("token")
            if got != proxy.tokens_out[-1].encode():
                stale.append(writes)
    out = set(t.encode() for t in proxy.tokens_out)
    with rd.lock:
        seen = dict(rd.seen)
        errors = list(rd.errors)
    assert not errors, "reads failed: %r" % errors[:10]
    bad = [t for t in seen if t not in out]
    assert not bad, "%d distinct torn/unknown reads (%d reads in all): %s" % (
        len(bad), sum(seen[t][2] for t in bad),
        "; ".join(classify_torn(t, out) for t in bad[:5]))
    assert not stale, "stale token right after refresh at writes %r" % \
        stale[:10]
    assert writes >= 20, "only %d refreshes in 20 s" % writes
    assert len({len(t) for t in seen}) >= 10
    # A sample of what was served is valid on the server.
    for t in list(seen)[-3:]:
        assert_authenticates(zenml_server, t, service_account)


# --------------------------------------------------------------- failures


def test_server_outage_expires_then_recovers(zenml_server, service_account,
                                             mount):
    sa = service_account
    m = mount(sa.key, "token_lifetime=60")
    m.expect_errors = True
    zenml_server.stop()
    try:
        cur = m.read("token")
        exp = jwt_claims(cur.decode())["exp"]
        failed = None
        while failed is None:
            now = time.time()
            try:
                tok = m.read("token")
            except OSError as e:
                failed = (time.time(), e.errno)
                break
            assert tok == cur, "a new token while the server is down?"
            assert exp - time.time() >= EXPIRY_MARGIN - CLOCK_SLACK, \
                "served %.1f s before exp" % (exp - time.time())
            assert now < exp - EXPIRY_MARGIN + 5, "still served at exp-25"
            time.sleep(0.2)
        t_fail, err = failed
        assert err == errno.EKEYEXPIRED, errno.errorcode.get(err, err)
        assert t_fail >= exp - EXPIRY_MARGIN - 3, \
            "failed %.1f s before exp with a still-valid token" % (exp - t_fail)
        assert os_error(lambda: m.read("token")) == errno.EKEYEXPIRED
        assert os_error(lambda: m.read("token.json")) == errno.EKEYEXPIRED
        st = m.status()
        for k in STATUS_KEYS:
            assert k in st, k
        assert st["state"] == "expired", st
        assert int(st["refresh_failures"]) >= 1
        assert st["last_error"] not in ("", "-", "none", "null")
    finally:
        zenml_server.start()
    deadline = time.time() + 45
    while True:
        try:
            tok = m.read("token")
            break
        except OSError as e:
            assert e.errno == errno.EKEYEXPIRED
            assert time.time() < deadline, "no recovery 45 s after restart"
            time.sleep(0.5)
    assert tok != cur
    assert_authenticates(zenml_server, tok, sa)
    assert jwt_claims(tok.decode())["exp"] - time.time() >= EXPIRY_MARGIN
    assert m.status()["state"] == "ok"


def test_deactivated_key_stops_serving(zenml_server, service_account,
                                       mount):
    sa = service_account
    m = mount(sa.key, "token_lifetime=600,check_interval=2")
    m.expect_errors = True
    tok = m.read("token")
    assert_authenticates(zenml_server, tok, sa)
    zenml_server.set_api_key_active(sa.id, sa.key_id, False)
    t0 = time.time()
    # Independent check: the server no longer takes that token.
    # (the server itself refuses the minted token only from 0.96.3)
    assert zenml_server.current_user(tok.decode()).status_code == \
        (401 if TOKENS_BOUND else 200)
    err = None
    while err is None:
        try:
            got = m.read("token")
            assert got == tok
        except OSError as e:
            err = e.errno
            break
        assert time.time() - t0 < 15, "revoked token still served after 15 s"
        time.sleep(0.2)
    assert err in (errno.EKEYREVOKED, errno.EKEYREJECTED), \
        errno.errorcode.get(err, err)
    # And it stays that way: no stale token comes back.
    end = time.time() + 3
    while time.time() < end:
        assert os_error(lambda: m.read("token")) in (errno.EKEYREVOKED,
                                                     errno.EKEYREJECTED)
        time.sleep(0.2)
    st = m.status()
    assert st["state"] != "ok", st
    assert st["last_error"] not in ("", "-", "none", "null"), st
    assert sa.key not in m.text("status")


# --------------------------------------------------------- refused mounts


def _refused(tmp_path, args, env, code):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run_zenmlfs(["-f"] + args + [str(mnt)], env=env, timeout=90)
    assert r.returncode == code, "exit %s (want %s)\nstdout: %s\nstderr: %s" \
        % (r.returncode, code, r.stdout, r.stderr)
    assert r.stderr.strip(), "no message on stderr"
    assert not is_mounted(str(mnt))
    return r


def test_refused_bad_url(tmp_path, zenml_server, service_account):
    """A URL where no ZenML server answers (a 404 for the login): 3, and
    the key is not on the terminal.  (A server that does not answer at
    all is tried again: test_contract, test_fleet.)"""
    url = zenml_server.url + "/not-zenml"
    r = _refused(tmp_path, ["--url", url],
                 {"ZENML_STORE_API_KEY": service_account.key}, 3)
    assert service_account.key not in r.stderr + r.stdout


def test_refused_wrong_key(tmp_path, zenml_server):
    key = fake_api_key()
    r = _refused(tmp_path, ["--url", zenml_server.url],
                 {"ZENML_STORE_API_KEY": key}, 4)
    assert key not in r.stderr + r.stdout


def test_refused_missing_key(tmp_path, zenml_server):
    _refused(tmp_path, ["--url", zenml_server.url], {}, 2)


@pytest.mark.parametrize("opt", ["token_lifetime=59", "token_lifetime=abc",
                                 "token_mode=0999"])
def test_refused_bad_option(tmp_path, zenml_server, service_account, opt):
    _refused(tmp_path, ["--url", zenml_server.url, "-o", opt],
             {"ZENML_STORE_API_KEY": service_account.key}, 1)


# ---------------------------------------------------------------- secrets


def test_key_not_in_proc(zenml_server, service_account, mount):
    key = service_account.key
    m = mount(key, "token_lifetime=600", key_via="env")
    tok = m.read("token")
    assert_authenticates(zenml_server, tok, service_account)
    pid = m.proc.pid
    secret_hex = json.loads(base64.b64decode(key[len("ZENKEY_"):]))["key"]
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        cmdline = f.read()
    assert key.encode() not in cmdline
    assert secret_hex.encode() not in cmdline
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            environ = f.read()
    except PermissionError:
        environ = b""   # not dumpable and we lack CAP_SYS_PTRACE: hidden
    assert key.encode() not in environ, \
        "ZENML_STORE_API_KEY still in /proc/pid/environ"
    assert b"ZENML_STORE_API_KEY=ZENKEY" not in environ
    log = m.log()
    assert key not in log and secret_hex not in log
    assert tok.decode() not in log


def _cat_as_nobody(path):
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "cat", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd="/", timeout=30)


def test_token_private_by_default(zenml_server, service_account, mount):
    m = mount(service_account.key, "token_lifetime=600")
    r = _cat_as_nobody(m.join("token"))
    assert r.returncode != 0
    assert r.stdout == b""
    assert b"ermission denied" in r.stderr, r.stderr
    r = _cat_as_nobody(m.join("status"))   # the whole mount is private
    assert r.returncode != 0 and r.stdout == b""


def test_allow_other_modes(zenml_server, service_account, mount):
    # allow_other implies default_permissions: token stays 0400.
    m = mount(service_account.key, "token_lifetime=600,allow_other")
    st = os.stat(m.join("token"))
    assert st.st_mode & 0o777 == 0o400
    r = _cat_as_nobody(m.join("token"))
    assert r.returncode != 0 and r.stdout == b""
    r = _cat_as_nobody(m.join("status"))
    assert r.returncode == 0 and b"state: ok" in r.stdout, r.stderr
    m.umount()
    m.check_clean_exit()

    m2 = mount(service_account.key,
               "token_lifetime=600,allow_other,token_mode=0444")
    assert os.stat(m2.join("token")).st_mode & 0o777 == 0o444
    tok = m2.read("token")
    r = _cat_as_nobody(m2.join("token"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == tok
    assert_authenticates(zenml_server, r.stdout, service_account)


# -------------------------------------------------------------- bad input


def test_read_only_files_refuse_writes(zenml_server, service_account, mount):
    m = mount(service_account.key, "token_lifetime=600")
    before = m.text("status")
    url = m.text("server/url")
    for name in ("status", "server/url", "token", "whoami/id"):
        err = os_error(lambda: m.write(name, "x\n"))
        assert err in DENIED, "%s: %s" % (name, errno.errorcode.get(err, err))
    assert m.text("server/url") == url
    assert m.status()["state"] == "ok"
    assert m.text("status").splitlines()[0] == before.splitlines()[0]


def test_refresh_is_not_readable(zenml_server, service_account, mount):
    m = mount(service_account.key, "token_lifetime=600")
    err = os_error(lambda: m.read("refresh"))
    assert err in DENIED, errno.errorcode.get(err, err)


def test_key_typed_at_no_echo_prompt(zenml_server, service_account):
    """With no key configured and a terminal on stdin, zenmlfs asks for the
    key without echoing it, and mounts with what was typed."""
    import pty
    import select
    import shutil
    import tempfile
    from conftest import TMP_PREFIX, ZENMLFS_BIN, _base_env, _fusermount_u

    key = service_account.key
    work = tempfile.mkdtemp(prefix=TMP_PREFIX + "pty-", dir="/tmp")
    mnt = os.path.join(work, "mnt")
    os.mkdir(mnt)
    env = _base_env(work)
    pid, fd = pty.fork()
    if pid == 0:  # the child: zenmlfs on the pty, its controlling terminal
        try:
            os.execve(ZENMLFS_BIN, [ZENMLFS_BIN, "-f", "--url",
                                    zenml_server.url, mnt], env)
        finally:
            os._exit(127)
    out = b""

    def pump(until, timeout):
        nonlocal out
        end = time.time() + timeout
        while time.time() < end and not until():
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        return until()

    try:
        assert pump(lambda: b"API key for" in out, 30), out
        os.write(fd, key.encode() + b"\n")
        assert pump(lambda: is_mounted(mnt), 30), out
        pump(lambda: False, 0.5)
        # Echo was off: what was typed never came back on the terminal.
        assert key.encode() not in out
        tok = read_file(os.path.join(mnt, "token"))
        assert_authenticates(zenml_server, tok, service_account)
    finally:
        if is_mounted(mnt):
            _fusermount_u(mnt)
        for _ in range(100):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            status = -1
        os.close(fd)
        shutil.rmtree(work, ignore_errors=True)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
