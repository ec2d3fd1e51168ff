"""Issue "Interactive login and /zen/devices": `zenmlfs login` (the OAuth
device flow) and `logout`, mounting with the saved session, the devices/
tree (listing, attribute files, info.json, lock, rmdir), who may change
it, bad input, and what the daemon does when its own device is locked,
deleted or expired.

Every test drives zenmlfs as a user would and checks the effect against
the real ZenML server with its own HTTP calls.

This module runs its own ZenML server (the `zenml_server` fixture is
overridden below) with a 1 s device polling interval and a short device
authorization timeout, so a login takes about a second and an expiry
about AUTH_TIMEOUT seconds.

How the real server (zenml 0.98.0) ends a pending device login:
- denied: there is no "deny" endpoint.  A pending device has no user yet,
  so PUT/DELETE /devices/{id} answer 404 for everyone
  (zen_server/routers/devices_endpoints.py: update_authorized_device,
  delete_authorized_device).  What does lock it is
  max_failed_device_auth_attempts (3) wrong user codes at PUT
  /devices/{id}/verify (devices_endpoints.py: verify_authorized_device);
  polling a LOCKED device answers 400 {"error":"access_denied"}
  (zen_server/auth.py: authenticate_device).
- expired: polling a PENDING device answers authorization_pending even
  after device_auth_timeout (auth.py: authenticate_device checks status
  before expiry; delete_expired_authorized_devices in sql_zen_store.py
  selects with a Python `is None`, so it deletes nothing).  Only verify
  refuses a late approval ("device verification expired").  So the client
  must stop on its own after expires_in; `expired_token` comes only for a
  VERIFIED device past its expiry, which the proxy test below injects.
"""

import calendar
import errno
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid

import pytest
import requests

from conftest import (TOKENS_BOUND, TMP_PREFIX, ZENMLFS_BIN, attr,
                      is_mounted, nobody_op, os_error, read_file, run_zenmlfs)
from zenserver import ZenServer, clean_env, free_port, jwt_claims

POLL_INTERVAL = 1          # ZENML_SERVER_DEVICE_AUTH_POLLING_INTERVAL
AUTH_TIMEOUT = 10          # ZENML_SERVER_DEVICE_AUTH_TIMEOUT
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DENIED = (errno.EACCES, errno.EPERM)
REVOKE_WAIT = 8.0          # check_interval=2, plus slack

ATTRS = ("status", "hostname", "os", "ip_address", "client_id", "trusted",
         "expires", "last_login", "created", "updated", "city", "country",
         "failed_auth_attempts", "zenml_version", "python_version")
# file name -> (where in the hydrated device, kind)
ATTR_SRC = {
    "status": ("body", "status", "str"),
    "hostname": ("body", "hostname", "str"),
    "os": ("body", "os", "str"),
    "ip_address": ("body", "ip_address", "str"),
    "client_id": ("body", "client_id", "str"),
    "trusted": ("body", "trusted_device", "bool"),
    "expires": ("body", "expires", "time"),
    "last_login": ("metadata", "last_login", "time"),
    "created": ("body", "created", "time"),
    "updated": ("body", "updated", "time"),
    "city": ("metadata", "city", "str"),
    "country": ("metadata", "country", "str"),
    "failed_auth_attempts": ("metadata", "failed_auth_attempts", "int"),
    "zenml_version": ("metadata", "zenml_version", "str"),
    "python_version": ("metadata", "python_version", "str"),
}
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                     r"[0-9a-f]{12}$")
UA = "Host/zfs-test-host ZenML/0.98.0 Python/3.11.2 OS/Linux-6.1-test"


# ------------------------------------------------------------ the server


class DeviceServer(ZenServer):
    """A ZenServer with fast device-flow settings."""

    def env(self):
        e = super().env()
        e["ZENML_SERVER_DEVICE_AUTH_POLLING_INTERVAL"] = str(POLL_INTERVAL)
        e["ZENML_SERVER_DEVICE_AUTH_TIMEOUT"] = str(AUTH_TIMEOUT)
        return e

    def db_path(self):
        return os.path.join(self.workdir, "zenml.db")


# This module's own server (conftest's zenml_server; `mount`, `proxy` and
# `service_account` use it too).
ZENML_SERVER_CLASS = DeviceServer


# ------------------------------------------------------- REST helpers


def api_ok(srv, method, path, **kw):
    r = srv.api(method, path, **kw)
    assert r.status_code == 200, "%s %s: %s %s" % (method, path,
                                                   r.status_code, r.text)
    return r.json()


def server_device(srv, dev_id):
    """GET /devices/{id}?hydrate=true as the admin; None on 404."""
    r = srv.api("GET", "/api/v1/devices/" + dev_id,
                params={"hydrate": "true"})
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()


def server_device_ids(srv):
    """Ids of the admin's devices, every page."""
    ids, page = [], 1
    while True:
        j = api_ok(srv, "GET", "/api/v1/devices",
                   params={"page": page, "size": 2, "hydrate": "false"})
        ids += [it["id"] for it in j["items"]]
        if page >= j["total_pages"]:
            break
        page += 1
    assert len(ids) == len(set(ids))
    return set(ids)


def verify(srv, dev_id, user_code, trusted=False):
    return srv.api("PUT", "/api/v1/devices/%s/verify" % dev_id,
                   json={"user_code": user_code, "trusted_device": trusted})


def deny(srv, dev_id):
    """What the real server offers to refuse a pending device: wrong user
    codes until it locks it (max_failed_device_auth_attempts, 3)."""
    for _ in range(10):
        r = verify(srv, dev_id, "0" * 32)
        assert r.status_code == 400, r.text
        if "locked" in r.text:
            return
    pytest.fail("the server never locked device %s" % dev_id)


class RestDevice:
    """A device of the admin made with the device flow over REST, with a
    session token of its own."""

    def __init__(self, srv, trusted=False, client_id=None, user_agent=None,
                 activate=True):
        self.srv = srv
        self.client_id = client_id or str(uuid.uuid4())
        self.user_agent = user_agent
        self.trusted = trusted
        self.token = None
        self.device_code = None
        self.id = None
        self.start()
        assert verify(srv, self.id, self.user_code, trusted).status_code \
            == 200
        if activate:
            self.token = self.poll().json()["access_token"]

    def _post(self, path, data):
        headers = {"User-Agent": self.user_agent} if self.user_agent else {}
        return requests.post(self.srv.url + path, data=data, headers=headers,
                             timeout=30, allow_redirects=False)

    def start(self):
        r = self._post("/api/v1/device_authorization",
                       {"client_id": self.client_id})
        assert r.status_code == 200, r.text
        d = r.json()
        q = urllib.parse.parse_qs(urllib.parse.urlparse(
            d["verification_uri_complete"]).query)
        dev_id = q["device_id"][0]
        assert self.id in (None, dev_id)
        self.id = dev_id
        self.device_code = d["device_code"]
        self.user_code = d["user_code"]

    def poll(self, device_code=None):
        return self._post("/api/v1/login", {
            "grant_type": DEVICE_GRANT, "client_id": self.client_id,
            "device_code": device_code or self.device_code})

    def relogin(self):
        """A new device flow for the same client id; the new token."""
        self.start()
        assert verify(self.srv, self.id, self.user_code,
                      self.trusted).status_code == 200
        r = self.poll()
        assert r.status_code == 200, r.text
        self.token = r.json()["access_token"]
        return self.token

    def delete(self):
        try:
            self.srv.api("DELETE", "/api/v1/devices/" + self.id, timeout=10)
        except Exception:
            pass


@pytest.fixture
def rest_devices(zenml_server):
    """Factory: rest_devices(**kw) -> RestDevice; deleted after the test."""
    made = []

    def make(**kw):
        d = RestDevice(zenml_server, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.delete()


def token_works(srv, tok):
    return srv.current_user(tok).status_code == 200


# ----------------------------------------------------------- login CLI


def state_env(root):
    """HOME and XDG_STATE_HOME of one isolated installation."""
    return {"HOME": os.path.join(root, "home"),
            "XDG_STATE_HOME": os.path.join(root, "state")}


def new_state():
    root = tempfile.mkdtemp(prefix=TMP_PREFIX + "st-", dir="/tmp")
    os.chmod(root, 0o755)
    for sub in ("home", "state"):
        os.mkdir(os.path.join(root, sub), 0o700)
    return root


@pytest.fixture
def state():
    """An isolated HOME/XDG_STATE_HOME for `zenmlfs login` and mounts."""
    root = new_state()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def sessions_dir(root):
    return os.path.join(root, "state", "zenmlfs", "sessions")


def session_files(root):
    d = sessions_dir(root)
    if not os.path.isdir(d):
        return []
    return [os.path.join(d, n) for n in os.listdir(d)]


def client_id_of(root):
    with open(os.path.join(root, "state", "zenmlfs", "client_id")) as f:
        return f.read()


class Login:
    """A running `zenmlfs login URL [args]` with its stdout read by a
    thread."""

    def __init__(self, url, root, args=(), xdg=True):
        env = clean_env()
        for k in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME",
                  "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"):
            env.pop(k, None)
        env.update(state_env(root))
        if not xdg:
            del env["XDG_STATE_HOME"]
        self.url = url
        self.cmd = [ZENMLFS_BIN, "login", url] + list(args)
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, env=env,
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self._out = []
        self._err = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout,
                                                      self._out),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr,
                                                      self._err),
                             daemon=True)]
        for t in self._threads:
            t.start()
        self.device_id = None
        self.user_code = None
        self.verify_url = None

    def _pump(self, f, sink):
        while True:
            b = f.read1(4096) if hasattr(f, "read1") else f.read(4096)
            if not b:
                return
            with self._lock:
                sink.append(b)

    @property
    def out(self):
        with self._lock:
            return b"".join(self._out).decode(errors="replace")

    @property
    def err(self):
        with self._lock:
            return b"".join(self._err).decode(errors="replace")

    def wait_code(self, timeout=20):
        """Wait for the verification URL and the user code; check both."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.out
            m_code = re.search(r"^\r?user code: (\S+)\s*$", out, re.M)
            m_url = re.search(r"(\S*device_id=\S+)", out)
            if m_code and m_url:
                break
            if self.proc.poll() is not None:
                time.sleep(0.2)
                pytest.fail("zenmlfs login exited %s before showing a code"
                            "\nstdout: %s\nstderr: %s"
                            % (self.proc.returncode, self.out, self.err))
            time.sleep(0.05)
        else:
            self.kill()
            pytest.fail("no verification URL and user code after %ss:\n"
                        "stdout: %s\nstderr: %s" % (timeout, self.out,
                                                    self.err))
        self.user_code = m_code.group(1)
        self.verify_url = m_url.group(1)
        u = urllib.parse.urlparse(self.verify_url)
        # The server's verification_uri is relative (/devices/verify): the
        # daemon must make it absolute with the server URL.
        assert self.verify_url.startswith(self.url.rstrip("/") + "/"), \
            self.verify_url
        assert u.path == "/devices/verify", self.verify_url
        q = urllib.parse.parse_qs(u.query)
        assert q.get("user_code") == [self.user_code], self.verify_url
        assert len(q.get("device_id", [])) == 1, self.verify_url
        self.device_id = q["device_id"][0]
        assert UUID_RE.match(self.device_id), self.verify_url
        return self

    def finish(self, timeout=30):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("zenmlfs login still running after %ss:\nstdout: %s"
                        "\nstderr: %s" % (timeout, self.out, self.err))
        for t in self._threads:
            t.join(5)
        self.elapsed = time.monotonic() - self.t0
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def login_approved(srv, root, trusted=False, args=()):
    """`zenmlfs login` in root, approved as the admin; returns the Login."""
    lg = Login(srv.url, root, args).wait_code()
    r = verify(srv, lg.device_id, lg.user_code, trusted)
    assert r.status_code == 200, r.text
    rc = lg.finish()
    assert rc == 0, "login exit %s\nstdout: %s\nstderr: %s" % (rc, lg.out,
                                                               lg.err)
    return lg


@pytest.fixture(scope="module")
def admin_login(zenml_server):
    """One approved login of the admin, for the devices/ tests."""
    root = new_state()
    lg = login_approved(zenml_server, root)
    lg.root = root
    lg.env = state_env(root)
    yield lg
    try:
        zenml_server.api("DELETE", "/api/v1/devices/" + lg.device_id)
    except Exception:
        pass
    shutil.rmtree(root, ignore_errors=True)


def mount_session(mount, root, opts=""):
    """Mount with no key: the session saved in root must be used."""
    return mount(None, opts=opts, env_extra=state_env(root))


# ----------------------------------------------------------- file helpers


def iso_to_rfc3339(v):
    """The server's naive ISO UTC time as the tree must show it."""
    base = v.split(".")[0].rstrip("Z")
    t = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def expected_text(dev, name):
    part, key, kind = ATTR_SRC[name]
    v = (dev.get(part) or {}).get(key)
    if v is None:
        return ""
    if kind == "bool":
        return "1" if v else "0"
    if kind == "int":
        return str(int(v))
    if kind == "time":
        return iso_to_rfc3339(v)
    return str(v)


def expected_json(dev, name):
    part, key, kind = ATTR_SRC[name]
    v = (dev.get(part) or {}).get(key)
    if v is None:
        return None
    if kind == "time":
        return iso_to_rfc3339(v)
    return v


def write_fd(path, flags, data, mode=0o600):
    """open(flags)+write+close; the fd is always closed (a leaked fd
    would keep the mount busy)."""
    fd = os.open(path, flags, mode)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def write_lock(m, dev_id, data):
    return m.write("devices/%s/lock" % dev_id, data)


def wait_for(pred, timeout, step=0.2):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


# ================================================================ login


def test_login_approved_saves_session_and_mount_uses_it(zenml_server, state,
                                                        mount):
    srv = zenml_server
    lg = Login(srv.url, state, ["--trust"]).wait_code()
    # Nothing is saved before approval.
    time.sleep(POLL_INTERVAL * 1.5)
    assert lg.proc.poll() is None, "login ended before approval: %s" % lg.out
    assert session_files(state) == []
    assert verify(srv, lg.device_id, lg.user_code, True).status_code == 200
    assert lg.finish() == 0, lg.out + lg.err
    assert "logged in to %s" % srv.url in lg.out, lg.out

    # The client id: a UUID in $XDG_STATE_HOME/zenmlfs/client_id, and the
    # one the server knows the device by.
    cid = client_id_of(state).strip()
    assert UUID_RE.match(cid), cid
    dev = server_device(srv, lg.device_id)
    assert dev is not None
    assert dev["body"]["client_id"] == cid
    assert dev["body"]["status"] == "active"
    assert dev["body"]["trusted_device"] is True

    # The session: one 0600 file under sessions/, no token in clear.
    files = session_files(state)
    assert len(files) == 1, files
    st = os.stat(files[0])
    assert st.st_mode & 0o777 == 0o600, oct(st.st_mode)
    with open(files[0], "rb") as f:
        blob = f.read()
    assert b"eyJ" not in blob          # every JWT starts with base64 '{"'
    assert not re.search(rb"[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\."
                         rb"[A-Za-z0-9_-]{10,}", blob)
    assert lg.device_id.encode() not in blob
    assert not os.path.exists(files[0] + ".tmp")

    # A mount with no key uses the session: the admin, through this device.
    m = mount_session(mount, state, opts="check_interval=0")
    assert attr(m, "whoami/name") == "default"
    admin_id = srv.current_user(srv.admin_token()).json()["id"]
    assert attr(m, "whoami/id") == admin_id
    assert m.status().get("auth") == "device", m.text("status")
    assert m.status().get("state") == "ok", m.text("status")
    tok = m.read("token").decode()
    claims = jwt_claims(tok)
    assert claims["sub"] == admin_id
    if TOKENS_BOUND:
        assert claims.get("device_id") == lg.device_id
    assert token_works(srv, tok)
    assert lg.device_id in os.listdir(m.join("devices"))
    m.umount()


def test_second_login_reuses_client_id_then_logout(zenml_server, state,
                                                   mount):
    srv = zenml_server
    first = login_approved(srv, state)
    cid_file = client_id_of(state)
    [sess] = session_files(state)
    with open(sess, "rb") as f:
        blob1 = f.read()

    second = login_approved(srv, state)
    # Same installation, same client id: the server reuses the device.
    assert client_id_of(state) == cid_file
    assert second.device_id == first.device_id
    assert session_files(state) == [sess]
    with open(sess, "rb") as f:
        assert f.read() != blob1, "the second session was not saved"
    ids = [i for i in server_device_ids(srv)
           if server_device(srv, i)["body"]["client_id"] == cid_file.strip()]
    assert ids == [first.device_id]

    # The new session mounts.
    m = mount_session(mount, state, opts="check_interval=0")
    assert attr(m, "whoami/name") == "default"
    m.umount()
    m.check_clean_exit()

    # logout deletes the session (and only that)...
    r = subprocess.run([ZENMLFS_BIN, "logout", srv.url],
                       env=dict(clean_env(), **state_env(state)),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    assert session_files(state) == []
    assert client_id_of(state) == cid_file
    # ... so a mount now has no credential (exit 2) and is not made.
    mnt = tempfile.mkdtemp(prefix=TMP_PREFIX + "nomnt-", dir="/tmp")
    try:
        r = run_zenmlfs(["-f", "--url", srv.url, mnt],
                        env={"XDG_STATE_HOME": state_env(state)[
                            "XDG_STATE_HOME"]}, timeout=30)
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
        assert not is_mounted(mnt)
    finally:
        os.rmdir(mnt)


def test_login_denied(zenml_server, state):
    srv = zenml_server
    lg = Login(srv.url, state).wait_code()
    deny(srv, lg.device_id)
    rc = lg.finish()
    assert rc == 4, "exit %s\nstdout: %s\nstderr: %s" % (rc, lg.out, lg.err)
    assert "the login was denied" in lg.out, lg.out
    assert lg.elapsed < 15
    assert session_files(state) == []


def test_login_expires_at_the_servers_timeout(zenml_server, state, proxy):
    """The real server keeps answering authorization_pending after its
    device_auth_timeout: the client must give up after expires_in, polling
    at the server's interval meanwhile."""
    lg = Login(proxy.url, state).wait_code()
    rc = lg.finish(timeout=AUTH_TIMEOUT + 20)
    assert rc == 5, "exit %s\nstdout: %s\nstderr: %s" % (rc, lg.out, lg.err)
    assert "expired" in lg.out, lg.out
    assert AUTH_TIMEOUT - 1 <= lg.elapsed <= AUTH_TIMEOUT + 6, lg.elapsed
    polls = proxy.count("/api/v1/login")
    assert AUTH_TIMEOUT / POLL_INTERVAL / 2 <= polls <= \
        AUTH_TIMEOUT / POLL_INTERVAL + 2, polls
    assert session_files(state) == []


def test_login_expired_token_from_server(zenml_server, state, proxy):
    body = json.dumps({"error": "expired_token",
                       "error_description": "device expired"}).encode()
    proxy.add_fault("/api/v1/login", "status", status=400, body=body)
    lg = Login(proxy.url, state).wait_code()
    rc = lg.finish(timeout=20)
    assert rc == 5, "exit %s\nstdout: %s\nstderr: %s" % (rc, lg.out, lg.err)
    assert "expired" in lg.out, lg.out
    assert lg.elapsed < 8, lg.elapsed
    assert session_files(state) == []


def test_login_slow_down_adds_five_seconds(zenml_server, state, proxy):
    body = json.dumps({"error": "slow_down",
                       "error_description": "polling too fast"}).encode()
    proxy.add_fault("/api/v1/login", "status", status=400, body=body,
                    count=1)
    lg = Login(proxy.url, state).wait_code()
    assert verify(zenml_server, lg.device_id, lg.user_code).status_code \
        == 200
    rc = lg.finish(timeout=30)
    assert rc == 0, "exit %s\nstdout: %s\nstderr: %s" % (rc, lg.out, lg.err)
    # poll at ~1 s: slow_down; the next one 1 + 5 s later succeeds.
    assert proxy.count("/api/v1/login") == 2, proxy.counts()
    assert lg.elapsed >= POLL_INTERVAL + 5 - 0.5, lg.elapsed
    assert len(session_files(state)) == 1


def test_login_interrupted(zenml_server, state):
    lg = Login(zenml_server.url, state).wait_code()
    time.sleep(0.5)
    lg.proc.send_signal(signal.SIGINT)
    rc = lg.finish(timeout=10)
    assert rc == 130, "exit %s\nstdout: %s\nstderr: %s" % (rc, lg.out,
                                                           lg.err)
    assert "interrupted" in lg.out, lg.out
    assert session_files(state) == []


def test_login_url_with_trailing_slash(zenml_server, state, mount):
    """`login URL/` shows URL/devices/verify (not //) and the session is
    found by a mount given URL without the slash."""
    srv = zenml_server
    lg = Login(srv.url + "/", state).wait_code()
    assert lg.verify_url.startswith(srv.url + "/devices/verify?"), \
        lg.verify_url
    assert verify(srv, lg.device_id, lg.user_code).status_code == 200
    assert lg.finish() == 0, lg.out + lg.err
    m = mount_session(mount, state, opts="check_interval=0")
    assert attr(m, "whoami/name") == "default"
    assert m.status().get("auth") == "device", m.text("status")
    m.umount()
    r = subprocess.run([ZENMLFS_BIN, "logout", srv.url + "/"],
                       env=dict(clean_env(), **state_env(state)),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    assert session_files(state) == []


def test_login_without_xdg_state_home_uses_home(zenml_server, state,
                                                mount):
    srv = zenml_server
    lg = Login(srv.url, state, xdg=False).wait_code()
    assert verify(srv, lg.device_id, lg.user_code).status_code == 200
    assert lg.finish() == 0, lg.out + lg.err
    base = os.path.join(state, "home", ".local", "state", "zenmlfs")
    assert len(os.listdir(os.path.join(base, "sessions"))) == 1
    assert os.path.exists(os.path.join(base, "client_id"))
    assert session_files(state) == []       # nothing under the XDG dir
    m = mount(None, opts="check_interval=0",
              env_extra={"HOME": state_env(state)["HOME"]})
    assert attr(m, "whoami/name") == "default"
    assert m.status().get("auth") == "device", m.text("status")


def test_login_bad_url_unreachable_server_and_usage(state):
    env = dict(clean_env(), **state_env(state))

    def run(*args):
        return subprocess.run([ZENMLFS_BIN] + list(args), env=env,
                              stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=30)

    # A bad URL is exit 3, as for a mount (docs/zenmlfs.md, exit codes).
    r = run("login", "ftp://127.0.0.1/")
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    r = run("login")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    r = run("login", "http://127.0.0.1:1", "http://127.0.0.1:2")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    r = run("login", "http://127.0.0.1:%d" % free_port())
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip(), "no message for an unreachable server"
    assert session_files(state) == []
    r = run("logout", "http://127.0.0.1:%d" % free_port())
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)


# ============================================================== devices/


def test_devices_of_an_api_key_identity(zenml_server, admin_login,
                                        service_account, mount):
    """devices/ lists the authenticated user's devices: a service account
    has none, whatever devices the admin has."""
    assert server_device_ids(zenml_server)   # the admin has some
    m = mount(service_account.key)
    assert os.listdir(m.join("devices")) == []


def test_devices_listing_and_attributes(zenml_server, admin_login, mount,
                                        rest_devices):
    srv = zenml_server
    a = rest_devices(trusted=True, user_agent=UA)
    assert token_works(srv, a.token)          # sets last_login
    b = rest_devices(trusted=False)
    # Verified but never fetched its token, after one bad device code:
    # status "verified", an expiry, failed_auth_attempts 1.
    c = rest_devices(activate=False, user_agent=UA)
    assert c.poll(device_code="0" * 64).json()["error"] == "access_denied"

    # meta_ttl=60: every read below comes from one listing; no token
    # checks, so the daemon's own device is not touched meanwhile.
    m = mount_session(mount, admin_login.root,
                      opts="meta_ttl=60,check_interval=0")
    names = os.listdir(m.join("devices"))
    want = server_device_ids(srv)
    assert set(names) == want
    assert len(names) == len(want)
    assert {admin_login.device_id, a.id, b.id, c.id} <= want

    got = {}
    for dev_id in names:
        files = set(os.listdir(m.join("devices", dev_id)))
        assert files == set(ATTRS) | {"info.json", "lock"}, files
        assert os.path.isdir(m.join("devices", dev_id))
        for n in ATTRS + ("info.json", "lock"):
            p = m.join("devices", dev_id, n)
            assert os.stat(p).st_size == len(read_file(p)), p
        got[dev_id] = ({n: attr(m, "devices/%s/%s" % (dev_id, n))
                        for n in ATTRS},
                       json.loads(m.read("devices/%s/info.json" % dev_id)),
                       m.read("devices/%s/lock" % dev_id))

    for dev_id, (texts, info, lock) in got.items():
        dev = server_device(srv, dev_id)
        assert dev is not None
        for n in ATTRS:
            assert texts[n] == expected_text(dev, n), \
                "devices/%s/%s: %r, server %r" % (
                    dev_id, n, texts[n],
                    dev[ATTR_SRC[n][0]][ATTR_SRC[n][1]])
            if ATTR_SRC[n][2] == "time" and texts[n]:
                assert RFC3339_Z.match(texts[n]), texts[n]
        assert set(info) == set(ATTRS), sorted(info)
        for n in ATTRS:
            assert info[n] == expected_json(dev, n), \
                "info.json %s of %s: %r, server %r" % (
                    n, dev_id, info[n], dev[ATTR_SRC[n][0]][ATTR_SRC[n][1]])
        assert lock == (b"1\n" if dev["body"]["status"] == "locked"
                        else b"0\n")

    # The facts the test itself set up.
    ta, tb, tc = got[a.id][0], got[b.id][0], got[c.id][0]
    assert (ta["status"], ta["trusted"], ta["hostname"], ta["os"]) == \
        ("active", "1", "zfs-test-host", "Linux-6.1-test")
    assert (ta["zenml_version"], ta["python_version"]) == ("0.98.0",
                                                           "3.11.2")
    assert ta["last_login"] != ""
    assert (tb["status"], tb["trusted"], tb["hostname"], tb["expires"],
            tb["last_login"]) == ("active", "0", "", "", "")
    assert (tc["status"], tc["failed_auth_attempts"]) == ("verified", "1")
    assert tc["expires"] != ""
    assert got[admin_login.device_id][0]["client_id"] == \
        client_id_of(admin_login.root).strip()
    # Missing values: an empty line, null in info.json.
    assert m.read("devices/%s/hostname" % b.id) == b"\n"
    assert got[b.id][1]["hostname"] is None
    # The daemon's own device is the one it authenticates with.
    assert got[admin_login.device_id][0]["status"] == "active"


def test_devices_listing_follows_the_server(zenml_server, admin_login,
                                            mount, rest_devices):
    srv = zenml_server
    m = mount_session(mount, admin_login.root, opts="meta_ttl=1")
    before = set(os.listdir(m.join("devices")))
    assert before == server_device_ids(srv)
    d = rest_devices()
    assert wait_for(lambda: d.id in os.listdir(m.join("devices")), 5), \
        "a new device did not show up"
    assert set(os.listdir(m.join("devices"))) == server_device_ids(srv)
    # Locked over REST: lock and status follow within meta_ttl.
    api_ok(srv, "PUT", "/api/v1/devices/" + d.id, json={"locked": True})
    assert wait_for(lambda: m.read("devices/%s/lock" % d.id) == b"1\n", 5)
    assert attr(m, "devices/%s/status" % d.id) == "locked"
    srv.api("DELETE", "/api/v1/devices/" + d.id)
    assert wait_for(lambda: d.id not in os.listdir(m.join("devices")), 5)
    assert os_error(lambda: os.stat(m.join("devices", d.id))) == \
        errno.ENOENT
    assert set(os.listdir(m.join("devices"))) == before


def test_lock_and_unlock(zenml_server, admin_login, mount, rest_devices):
    srv = zenml_server
    d = rest_devices()
    m = mount_session(mount, admin_login.root)
    lock = "devices/%s/lock" % d.id
    st = os.stat(m.join(lock))
    assert st.st_mode & 0o777 == 0o600, oct(st.st_mode)
    assert m.read(lock) == b"0\n"

    assert write_lock(m, d.id, "1\n") == 2
    assert server_device(srv, d.id)["body"]["status"] == "locked"
    assert m.read(lock) == b"1\n"               # at once, despite meta_ttl
    assert attr(m, "devices/%s/status" % d.id) == "locked"
    r = srv.current_user(d.token)
    assert r.status_code == 401, r.text          # its token is refused

    assert write_lock(m, d.id, "0\n") == 2
    assert server_device(srv, d.id)["body"]["status"] == "active"
    assert m.read(lock) == b"0\n"
    assert attr(m, "devices/%s/status" % d.id) == "active"
    # A new login of that device works again.
    assert token_works(srv, d.relogin())

    # Every spelling of a boolean, any case, optional newline.
    for data, want in (("TRUE", "locked"), ("off\n", "active"),
                       ("Yes", "locked"), ("no\n", "active"),
                       ("On\n", "locked"), ("False", "active"),
                       ("1", "locked"), ("0", "active")):
        write_lock(m, d.id, data)
        assert server_device(srv, d.id)["body"]["status"] == want, data
        assert m.read(lock) == (b"1\n" if want == "locked" else b"0\n")

    # open(O_TRUNC) alone is accepted and changes nothing.
    fd = os.open(m.join(lock), os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert server_device(srv, d.id)["body"]["status"] == "active"
    os.truncate(m.join(lock), 0)
    assert server_device(srv, d.id)["body"]["status"] == "active"
    assert "uid 0" in m.log() and "lock device '%s'" % d.id in m.log()


def test_rmdir_deletes_device(zenml_server, admin_login, mount,
                              rest_devices):
    srv = zenml_server
    d = rest_devices()
    m = mount_session(mount, admin_login.root)
    assert d.id in os.listdir(m.join("devices"))
    os.rmdir(m.join("devices", d.id))
    assert server_device(srv, d.id) is None
    assert d.id not in os.listdir(m.join("devices"))
    assert os_error(lambda: os.stat(m.join("devices", d.id))) == \
        errno.ENOENT
    assert os_error(lambda: m.read("devices/%s/status" % d.id)) == \
        errno.ENOENT
    assert srv.current_user(d.token).status_code == 401
    assert set(os.listdir(m.join("devices"))) == server_device_ids(srv)
    # Again, and a device that never existed: ENOENT, nothing deleted.
    before = server_device_ids(srv)
    assert os_error(lambda: os.rmdir(m.join("devices", d.id))) == \
        errno.ENOENT
    assert os_error(lambda: os.rmdir(m.join("devices",
                                            str(uuid.uuid4())))) == \
        errno.ENOENT
    assert server_device_ids(srv) == before


def test_device_gone_behind_the_cache(zenml_server, admin_login, mount,
                                      rest_devices):
    """The listing is cached (meta_ttl=60) while the device is deleted on
    the server: lock and rmdir get the server's 404 as ENOENT."""
    srv = zenml_server
    d = rest_devices()
    m = mount_session(mount, admin_login.root, opts="meta_ttl=60")
    m.expect_errors = True      # the refused PUT is logged as an error
    assert m.read("devices/%s/lock" % d.id) == b"0\n"
    r = srv.api("DELETE", "/api/v1/devices/" + d.id)
    assert r.status_code == 200, r.text
    e = os_error(lambda: write_lock(m, d.id, "1\n"))
    assert e == errno.ENOENT, e
    # The failed write refreshed the listing ...
    assert d.id not in os.listdir(m.join("devices"))
    # ... and nothing came back to life on the server.
    assert server_device(srv, d.id) is None
    assert set(os.listdir(m.join("devices"))) == server_device_ids(srv)


def test_bad_input_changes_nothing(zenml_server, admin_login, mount,
                                   rest_devices):
    srv = zenml_server
    d = rest_devices()
    m = mount_session(mount, admin_login.root)
    before = server_device(srv, d.id)
    ids_before = server_device_ids(srv)
    lock = "devices/%s/lock" % d.id

    bad = [b"banana\n", b"\n", b"2\n", b"2", b"-1\n", b"10\n", b" 1\n",
           b"1 \n", b"1\n\n", b"1 0\n", b"yes please\n", b"\x00",
           b"1\x00", b"truee\n", b"1" * (1 << 20)]
    for data in bad:
        e = os_error(lambda: m.write(lock, data))
        assert e == errno.EINVAL, "%r: errno %s" % (data[:20], e)
    # An empty write(2): nothing to apply; it must not lock or unlock.
    fd = os.open(m.join(lock), os.O_WRONLY)
    try:
        try:
            assert os.write(fd, b"") == 0
        except OSError as e:
            assert e.errno == errno.EINVAL
    finally:
        os.close(fd)

    # mkdir, writes to attribute files, unlink: refused.
    for name in ("x", str(uuid.uuid4())):
        e = os_error(lambda: os.mkdir(m.join("devices", name)))
        assert e in DENIED, "mkdir devices/%s: errno %s" % (name, e)
    # (The daemon runs in the kernel's no-open mode, so the refusal may
    # come at open or at write: the open+write+close as a whole must fail.)
    for name in ATTRS + ("info.json",):
        rel = "devices/%s/%s" % (d.id, name)
        content = m.read(rel)
        e = os_error(lambda: m.write(rel, b"1\n"))
        assert e in DENIED, "echo 1 > %s: errno %s" % (name, e)
        e = os_error(lambda: write_fd(m.join(rel), os.O_RDWR, b"locked\n"))
        assert e in DENIED, "open(%s, O_RDWR)+write: errno %s" % (name, e)
        e = os_error(lambda: os.truncate(m.join(rel), 0))
        assert e in DENIED, "truncate %s: errno %s" % (name, e)
        assert m.read(rel) == content, name
    e = os_error(lambda: os.unlink(m.join(lock)))
    assert e in DENIED, "unlink lock: errno %s" % e
    e = os_error(lambda: write_fd(m.join("devices", d.id, "new"),
                                  os.O_WRONLY | os.O_CREAT, b"1"))
    assert e in DENIED, "create in a device folder: errno %s" % e

    # Lookups of what does not exist.
    ghost = str(uuid.uuid4())
    for name in (ghost, "not-a-uuid", d.id[:-1], d.id + "0", "..."):
        e = os_error(lambda: os.stat(m.join("devices", name)))
        assert e == errno.ENOENT, "stat devices/%s: errno %s" % (name, e)
    assert os_error(lambda: m.write("devices/%s/lock" % ghost, "1")) == \
        errno.ENOENT
    assert os_error(lambda: m.read("devices/%s/status" % ghost)) == \
        errno.ENOENT
    assert os_error(lambda: m.read("devices/%s/nope" % d.id)) == \
        errno.ENOENT

    # Nothing reached the server.
    after = server_device(srv, d.id)
    assert after["body"]["status"] == "active"
    assert after["body"]["updated"] == before["body"]["updated"]
    assert server_device_ids(srv) == ids_before
    assert token_works(srv, d.token)
    assert m.read(lock) == b"0\n"


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
def as_nobody(cmd):
    return subprocess.run(NOBODY + ["sh", "-c", cmd],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=20)


def nobody_errno(op, path, data=""):
    """errno (0 = success) of op on path as uid 65534 (dash's echo says
    "I/O error" for any failed write, so the errno is taken here)."""
    name = nobody_op(op, path, data, timeout=20)["errno"]
    return getattr(errno, name) if name else 0


def test_other_uid_cannot_lock_or_delete(zenml_server, admin_login, mount,
                                         rest_devices):
    srv = zenml_server
    d = rest_devices()
    # The tree opened to others (tree_mode): they do get in, so the
    # refusals below mean something.
    m = mount_session(mount, admin_login.root,
                      opts="allow_other,tree_mode=0755")
    before = server_device(srv, d.id)
    dd = m.join("devices", d.id)
    r = as_nobody("cat '%s/status'" % dd)
    assert r.returncode == 0 and r.stdout == "active\n", (r.stdout, r.stderr)

    r = as_nobody("echo 1 > '%s/lock'" % dd)
    assert r.returncode != 0, r.stderr
    for op, path, data in (("write", dd + "/lock", "1\n"),
                           ("write", dd + "/lock", "0"),
                           ("rmdir", dd, ""),
                           ("mkdir", m.join("devices", "x"), "")):
        e = nobody_errno(op, path, data)
        assert e in DENIED, "%s %s as uid 65534: errno %s" % (op, path, e)
    after = server_device(srv, d.id)
    assert after is not None, "another uid deleted the device"
    assert after["body"]["status"] == "active"
    assert after["body"]["updated"] == before["body"]["updated"]
    assert token_works(srv, d.token)
    # The owner still may.
    write_lock(m, d.id, "1\n")
    assert server_device(srv, d.id)["body"]["status"] == "locked"


def test_file_owner_option_does_not_grant_control(zenml_server, admin_login,
                                                  mount, rest_devices):
    """-o uid=65534 makes 65534 the owner of token (and status, server/),
    never of the admin tree: lock stays the mounting user's, so 65534
    cannot write it even with the tree opened to all (tree_mode=0777).
    rmdir, which the open tree lets past the kernel, is refused by the
    daemon itself: it checks the caller's uid."""
    srv = zenml_server
    d = rest_devices()
    m = mount_session(mount, admin_login.root,
                      opts="allow_other,uid=65534,tree_mode=0777")
    before = server_device(srv, d.id)
    dd = m.join("devices", d.id)
    assert os.stat(dd + "/lock").st_uid == os.getuid()
    assert os.stat(m.join("token")).st_uid == 65534
    r = as_nobody("cat '%s/lock'" % dd)
    assert r.returncode == 0 and r.stdout == "0\n", (r.stdout, r.stderr)
    r = as_nobody("echo 1 > '%s/lock'" % dd)
    assert r.returncode != 0, r.stderr
    for data in ("1\n", "true", "0\n"):
        e = nobody_errno("write", dd + "/lock", data)
        assert e in DENIED, "write %r as uid 65534: errno %s\n%s" % (
            data, e, m.log())
    e = nobody_errno("rmdir", dd)
    assert e in DENIED, "rmdir as uid 65534: errno %s" % e
    after = server_device(srv, d.id)
    assert after is not None, "another uid deleted the device"
    assert after["body"]["status"] == "active"
    assert after["body"]["updated"] == before["body"]["updated"]
    assert m.read("devices/%s/lock" % d.id) == b"0\n"
    assert re.search(r"uid 65534 .*may not", m.log()), m.log()


# ================================================ the daemon's own device


def set_device_expires(srv, dev_id, when):
    """Set a device's expiry in the server's database (the server has no
    API for it, and its shortest device lifetime is a minute)."""
    con = sqlite3.connect(srv.db_path(), timeout=30)
    try:
        cur = con.execute("UPDATE auth_devices SET expires=? WHERE id=?",
                          (when, dev_id.replace("-", "")))
        con.commit()
        assert cur.rowcount == 1
    finally:
        con.close()


def own_device_revoked(m, want_errno, timeout=REVOKE_WAIT):
    """Wait until reading token fails with want_errno; returns the time."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        last = os_error(lambda: m.read("token"))
        if last == want_errno:
            return time.monotonic() - t0
        time.sleep(0.2)
    pytest.fail("token read still gives errno %s after %.0fs (want %s)\n"
                "status:\n%s\nlog:\n%s" % (last, timeout, want_errno,
                                            m.text("status"), m.log()))


@pytest.mark.parametrize("how", ["tree-lock", "tree-rmdir", "rest-lock",
                                 "rest-delete"])
def test_own_device_revoked(zenml_server, state, mount, how):
    srv = zenml_server
    lg = login_approved(srv, state)
    m = mount_session(mount, state, opts="check_interval=2,meta_ttl=1")
    m.expect_errors = True
    tok = m.read("token").decode()
    if TOKENS_BOUND:
        assert jwt_claims(tok)["device_id"] == lg.device_id
    assert m.status()["state"] == "ok"
    own = m.join("devices", lg.device_id)

    if how == "tree-lock":
        assert write_lock(m, lg.device_id, "1\n") == 2
        assert server_device(srv, lg.device_id)["body"]["status"] == \
            "locked"
    elif how == "tree-rmdir":
        os.rmdir(own)
        assert server_device(srv, lg.device_id) is None
    elif how == "rest-lock":
        api_ok(srv, "PUT", "/api/v1/devices/" + lg.device_id,
               json={"locked": True})
    else:
        r = srv.api("DELETE", "/api/v1/devices/" + lg.device_id)
        assert r.status_code == 200, r.text

    own_device_revoked(m, errno.EKEYREVOKED)
    assert os_error(lambda: m.read("token.json")) == errno.EKEYREVOKED
    # Metadata needs the server too: once the cache (meta_ttl=1) is gone,
    # it fails the same way.
    time.sleep(1.5)
    assert os_error(lambda: m.read("whoami/name")) == errno.EKEYREVOKED
    assert os_error(lambda: os.listdir(m.join("devices"))) == \
        errno.EKEYREVOKED
    st = m.status()
    assert st["state"] == "unauthenticated", m.text("status")
    # The server's reason, naming the device: "device <id> is not
    # active" (locked) or "error retrieving token device <id>" (deleted).
    assert lg.device_id in st.get("last_error", ""), m.text("status")
    assert re.search(r"lock|revok|not active|delet|retriev",
                     st.get("last_error", ""), re.I), m.text("status")
    assert tok not in m.text("status") and tok not in m.log()
    m.umount()
    m.check_clean_exit()

    # The saved session is dead: a new mount with it is refused (exit 4).
    mnt = tempfile.mkdtemp(prefix=TMP_PREFIX + "nomnt-", dir="/tmp")
    try:
        r = run_zenmlfs(["-f", "--url", srv.url, mnt],
                        env=state_env(state), timeout=30)
        assert r.returncode == 4, (r.returncode, r.stdout, r.stderr)
        assert not is_mounted(mnt)
    finally:
        os.rmdir(mnt)


def test_own_device_expired(zenml_server, state, mount):
    srv = zenml_server
    lg = login_approved(srv, state)
    m = mount_session(mount, state, opts="check_interval=2,meta_ttl=1")
    m.expect_errors = True
    assert token_works(srv, m.read("token").decode())
    set_device_expires(srv, lg.device_id, "2001-01-01 00:00:00.000000")
    own_device_revoked(m, errno.EKEYEXPIRED)
    time.sleep(1.5)
    assert os_error(lambda: m.read("whoami/name")) == errno.EKEYEXPIRED
    st = m.status()
    # docs/design.md (Status) has both "expired" and "unauthenticated";
    # the issue says unauthenticated.  Either way, not ok, and the reason
    # is named.
    assert st["state"] in ("unauthenticated", "expired"), m.text("status")
    assert re.search(r"expire", st.get("last_error", ""), re.I), \
        m.text("status")
    assert lg.device_id in st["last_error"], m.text("status")


# Last, so that `pytest -x` runs everything above first.
def test_login_survives_a_transient_server_error(zenml_server, state, proxy):
    """A 503 on one poll is not an outcome of the login: keep polling
    (as the daemon already does when the connection fails)."""
    proxy.add_fault("/api/v1/login", "status", status=503,
                    body=b'{"detail":"Service Unavailable"}', count=1)
    lg = Login(proxy.url, state).wait_code()
    assert verify(zenml_server, lg.device_id, lg.user_code).status_code \
        == 200
    rc = lg.finish(timeout=30)
    assert rc == 0, "exit %s\nstdout: %s\nstderr: %s" % (rc, lg.out, lg.err)
    assert proxy.count("/api/v1/login") >= 2
    assert len(session_files(state)) == 1
